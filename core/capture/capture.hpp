#pragma once
// Packet capture: AF_PACKET sockets opened inside the lab's namespaces, merged in time
// order into one pcapng stream with one interface block per NODE:IFNAME.
//
// Rules of this module:
// - Nothing is written before everything is checked: every interface exists, its link
//   type is known, the filter compiles for it. Only then are the sockets bound (bound,
//   they capture) and may the caller create the output file.
// - A socket is made with protocol 0 (it receives nothing), gets its filter, and only
//   then is bound to ETH_P_ALL: no packet slips in before the filter (libpcap drains a
//   socket for that; binding last needs no draining).
// - Interfaces are put in promiscuous mode for as long as their socket lives (the
//   kernel undoes it when the socket closes), as tcpdump does.
// - Timestamps are the kernel's (SO_TIMESTAMPNS, CLOCK_REALTIME), written in
//   nanoseconds (if_tsresol 9). The kernel turns receive stamping on lazily (a
//   workqueue) for the first socket that asks; until then AF_PACKET packets are stamped
//   when read. open() waits (briefly) until a loopback datagram shows it is on.
// - Packets of different sockets are put in time order by holding each back briefly
//   (kHoldBack) after the read round that found it; on stop every socket is drained
//   once more and everything left is written, so a stop loses nothing queued.
// - The writer is pure encoding (no I/O) so that it is unit-tested byte by byte.
//
// Kernel facts relied on:
// - A packet socket and its ioctls (SIOCGIFINDEX, SIOCGIFHWADDR) work in the
//   namespace the socket was created in, whichever thread uses it later.
// - PACKET_STATISTICS resets the counters it returns; tp_packets includes tp_drops.
// - A TUN device (ARPHRD_NONE) carries bare IP packets: its link type is LINKTYPE_RAW.

#include <linux/filter.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "base/error.hpp"
#include "base/unique_fd.hpp"

namespace labctl::capture {

// A request that cannot be captured: an unknown interface, a bad filter, a link type
// labctl cannot write. Nothing was captured or written. The CLI exits 2 for it.
class RequestError : public LabError {
public:
    using LabError::LabError;
    bool is_usage() const noexcept override { return true; }
};

// pcapng link types (www.tcpdump.org/linktypes.html).
inline constexpr std::uint16_t kLinktypeEthernet = 1;
inline constexpr std::uint16_t kLinktypeRaw = 101;

// The largest packet kept whole (libpcap's default snapshot length).
inline constexpr std::uint32_t kSnapLen = 262144;

// ---- pcapng encoding (draft-ietf-opsawg-pcapng), host byte order ----
namespace pcapng {

enum class Direction { unknown, inbound, outbound };

// Section Header Block naming the writing application (shb_userappl).
void append_section_header(std::vector<std::uint8_t>& out, std::string_view application);
// Interface Description Block: if_name, optional if_description, if_tsresol = 9 (ns).
void append_interface(std::vector<std::uint8_t>& out, std::uint16_t linktype, std::uint32_t snaplen,
                      std::string_view name, std::string_view description);
// Enhanced Packet Block; `data` is what was captured, `original_length` the packet's
// length on the wire; a known direction is written as epb_flags.
void append_packet(std::vector<std::uint8_t>& out, std::uint32_t interface_id, std::uint64_t timestamp_ns,
                   std::span<const std::uint8_t> data, std::uint32_t original_length, Direction direction);
// Interface Statistics Block: isb_starttime, isb_endtime, isb_ifrecv (packets the
// kernel handed the filter), isb_osdrop (dropped by the kernel), isb_usrdeliv
// (written to the file).
struct InterfaceStatistics {
    std::uint64_t start_ns = 0, end_ns = 0;
    std::uint64_t received = 0, kernel_drops = 0, delivered = 0;
};
void append_statistics(std::vector<std::uint8_t>& out, std::uint32_t interface_id, const InterfaceStatistics& s);

}  // namespace pcapng

// Compiles a BPF filter expression with libpcap for `linktype`. Throws RequestError
// with libpcap's message (`filter "tcp port": syntax error`).
std::vector<sock_filter> compile_filter(const std::string& expression, std::uint16_t linktype,
                                        std::uint32_t snaplen = kSnapLen);

// The pcapng link type of an ARPHRD_* device type; nullopt for one labctl cannot write.
std::optional<std::uint16_t> linktype_of_arphrd(std::uint16_t arphrd);

// One interface to capture on.
struct Target {
    std::string label;   // "h1:eth0": the interface block's name
    std::string netns;   // "lab-h1"
    std::string ifname;  // "eth0"
};

struct Options {
    std::string filter;                                 // BPF expression; "" for every packet
    std::uint64_t count = 0;                            // stop after this many packets; 0: no limit
    std::optional<std::chrono::milliseconds> duration;  // stop after this long
};

struct InterfaceStats {
    std::string label;
    std::uint64_t captured = 0;      // written to the file
    std::uint64_t received = 0;      // handed to the socket by the kernel (after the filter)
    std::uint64_t kernel_drops = 0;  // lost because the socket's buffer was full
};

struct Stats {
    std::vector<InterfaceStats> interfaces;  // in the order of the targets
    std::uint64_t captured() const;
    std::uint64_t received() const;
    std::uint64_t kernel_drops() const;
    bool reader_gone = false;  // the output was a pipe whose reader went away (EPIPE)
    // Packets written after one stamped later: they reached their socket more than
    // kHoldBack after their timestamp. 0 means the file is in time order.
    std::uint64_t out_of_order = 0;
};

// How long a packet is held back before it may be written, so that a packet read a
// little later from another socket but stamped earlier still goes before it.
// The kernel stamps a received packet when it queues it for processing, and a busy CPU
// may process (and hand to our socket) that queue a while later.
inline constexpr std::chrono::milliseconds kHoldBack{100};

// Sockets on every target, filtered and bound: capturing into their buffers from the
// moment open() returns.
class Capture {
public:
    // Opens, filters and binds one socket per target. Throws RequestError (an interface
    // that does not exist, a link type labctl cannot write, a bad filter: nothing bound),
    // KernelError (a namespace or socket call failed).
    static Capture open(const std::vector<Target>& targets, const Options& options);

    Capture(Capture&&) noexcept;
    Capture& operator=(Capture&&) noexcept;
    ~Capture();

    // Writes the pcapng stream to `fd` until the count or the duration is reached or
    // `stop` becomes true, then the statistics blocks; returns the counts. A reader that
    // goes away (EPIPE) ends it as a stop does. Throws KernelError when writing fails
    // (what was written up to then is whole blocks).
    Stats run(int fd, const std::atomic<bool>& stop);

    const std::vector<Target>& targets() const;

private:
    struct Impl;
    explicit Capture(std::unique_ptr<Impl> impl);
    std::unique_ptr<Impl> impl_;
};

// A capture running on a thread of its own into a file, until stop() (or its count or
// duration). For the Python API and the pytest plugin.
class Background {
public:
    // Starts writing `capture` into `out` (owned from here on). Throws std::system_error
    // when the thread cannot be started.
    Background(Capture capture, UniqueFd out);
    Background(const Background&) = delete;
    Background& operator=(const Background&) = delete;
    // Stops and waits, ignoring a failure (call stop() to see it).
    ~Background();

    // Waits up to `timeout` for the capture to end by itself; true when it has.
    bool wait(std::chrono::milliseconds timeout);
    // Stops the capture, waits for the file to be complete, returns the counts. Throws
    // what run() threw. Calling it again returns the same counts.
    Stats stop();

private:
    Capture capture_;
    UniqueFd out_;
    std::atomic<bool> stop_{false};
    std::mutex mutex_;
    std::condition_variable finished_;
    bool done_ = false;  // under mutex_
    Stats stats_;
    std::exception_ptr failure_;
    std::thread thread_;
    bool joined_ = false;
};

}  // namespace labctl::capture
