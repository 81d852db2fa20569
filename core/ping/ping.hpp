#pragma once
// The in-process ICMP/ICMPv6 pinger: many echo probes, from many network namespaces, in
// flight at once from one event loop on the calling thread.
//
// The caller opens the namespaces (/run/netns/<name>) and passes their fds; sockets are
// created inside each namespace on short-lived helper threads (a socket keeps the
// namespace it was created in), so the calling thread never changes namespace.

#include <atomic>
#include <chrono>
#include <cstddef>
#include <functional>
#include <string>
#include <vector>

#include "base/ip.hpp"

namespace labctl::ping {

struct Probe {
    int netns_fd = -1;        // namespace of the source node; the caller keeps it open
    std::string bind_ifname;  // empty = any; else SO_BINDTODEVICE (like ping -I ifname)
    IpAddress destination;
    int count = 3;  // echo requests, `interval` apart
    std::chrono::milliseconds interval{100};
    std::chrono::milliseconds timeout{1000};  // after the LAST request sent
    bool stop_at_first_reply = true;          // checks: a reachable pair stops at its first reply
    // Checks end a probe at the first refusal or ICMP error (the contract); `labctl ping`
    // keeps sending like ping(8) does, and the last error becomes the reason.
    bool stop_on_error = true;
};

struct Reply {
    int seq;        // 1 for the first request, as ping(8)'s icmp_seq
    double rtt_ms;  // CLOCK_MONOTONIC, request sent to reply read
    int ttl;        // IPv4 TTL or IPv6 hop limit of the reply
};

struct ProbeResult {
    int sent = 0;      // requests the kernel accepted
    int received = 0;  // distinct requests answered (duplicates are not counted)
    std::vector<Reply> replies;
    // The probe ended at once: the kernel refused to send (no route, prohibited...), an
    // ICMP destination-unreachable or time-exceeded came back, or the bind interface is
    // missing.
    bool refused = false;
    // Why it failed: "Network is unreachable (ENETUNREACH)", "Destination host unreachable
    // from 10.0.1.1", "eth9: No such device (ENODEV)"; "No reply" when nothing came back;
    // empty when a reply came.
    std::string reason;

    // Over `replies`; 0 when there are none.
    double rtt_min() const;
    double rtt_avg() const;
    double rtt_max() const;
};

// Called on the calling thread for each reply as it arrives (for `labctl ping` lines).
using ReplyCallback = std::function<void(std::size_t probe_index, const Reply&)>;

// Runs every probe at once and returns one result per probe, in the same order.
// Per-probe problems (no route, missing bind interface, unreachable) are results, not
// exceptions. Throws std::invalid_argument for a malformed probe (no address family,
// count < 1, negative times, more than 65536 probes from one namespace), KernelError when
// a namespace cannot be entered or a socket cannot be opened (EPERM without CAP_NET_RAW,
// EMFILE), and whatever `on_reply` throws (the run is abandoned).
// With `stop`, a store of true (e.g. from a SIGINT handler) ends every probe at once, as
// its deadline would: the results so far are returned (ping(8)'s Ctrl-C summary).
std::vector<ProbeResult> run(const std::vector<Probe>& probes, const ReplyCallback& on_reply = {},
                             const std::atomic<bool>* stop = nullptr);

}  // namespace labctl::ping
