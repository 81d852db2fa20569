#pragma once
// The in-process pinger: many probes (ICMP/ICMPv6 echo, or TCP handshakes), from many
// network namespaces, in flight at once from one event loop on the calling thread.
//
// The caller opens the namespaces (/run/netns/<name>) and passes their fds; sockets are
// created inside each namespace on short-lived helper threads (a socket keeps the
// namespace it was created in), so the calling thread never changes namespace.
//
// A probe may be retried (checks with `within_s`): an attempt whose outcome is not the
// wanted one is made again after a backoff, until it is or the time is up. Waiting is
// epoll's: a retrying probe costs no CPU between attempts.

#include <atomic>
#include <chrono>
#include <cstddef>
#include <functional>
#include <string>
#include <vector>

#include "base/ip.hpp"

namespace labctl::ping {

enum class Protocol {
    icmp,  // echo requests (ICMP for IPv4, ICMPv6 for IPv6)
    tcp,   // one non-blocking connect() to `port`: answered = the handshake completed
};

// Between attempts of a retried probe: 100 ms, doubling up to 1 s.
inline constexpr std::chrono::milliseconds kFirstBackoff{100};
inline constexpr std::chrono::milliseconds kMaxBackoff{1000};

struct Probe {
    Protocol protocol = Protocol::icmp;
    std::uint16_t port = 0;   // tcp: the destination port; count and interval are unused
    int netns_fd = -1;        // namespace of the source node; the caller keeps it open
    std::string netns_name;   // that namespace's name ("lab-h1"), for messages; empty: its fd
    std::string bind_ifname;  // empty = any; else SO_BINDTODEVICE (like ping -I ifname)
    IpAddress destination;
    int count = 3;  // echo requests, `interval` apart
    std::chrono::milliseconds interval{100};
    std::chrono::milliseconds timeout{1000};  // after the LAST request sent
    bool stop_at_first_reply = true;          // checks: a reachable pair stops at its first reply
    // Checks end a probe at the first refusal or ICMP error (docs/topology.md, "Checks"); `labctl ping`
    // keeps sending like ping(8) does, and the last error becomes the reason.
    bool stop_on_error = true;
    // Retrying: while less than `retry_for` has passed since the probe's start, an attempt
    // that ends answered when !want_answer (or unanswered when want_answer) is made again
    // after a backoff. Zero: one attempt.
    std::chrono::milliseconds retry_for{0};
    bool want_answer = true;
};

struct Reply {
    int seq;        // 1 for the first request, as ping(8)'s icmp_seq
    double rtt_ms;  // CLOCK_MONOTONIC, request sent to reply read
    int ttl;        // IPv4 TTL or IPv6 hop limit of the reply
};

// Of the last attempt (a retried probe's earlier attempts leave only `attempts`). A TCP
// probe sends one SYN and receives the handshake or not: sent 1, received 0 or 1, its
// reply's rtt_ms the time connect() took (ttl -1).
struct ProbeResult {
    int sent = 0;      // requests the kernel accepted
    int received = 0;  // distinct requests answered (duplicates are not counted)
    int attempts = 0;  // 1 unless retried
    std::vector<Reply> replies;
    // The probe ended at once: the kernel refused to send (no route, prohibited...), an
    // ICMP destination-unreachable or time-exceeded came back, or the bind interface is
    // missing.
    bool refused = false;
    // Why it failed: "Network is unreachable (ENETUNREACH)", "Destination host unreachable
    // from 10.0.1.1", "eth9: No such device (ENODEV)", "Connection refused (ECONNREFUSED)";
    // "No reply" (TCP: "No answer within N ms") when nothing came back; empty when a
    // reply came.
    std::string reason;

    // Over `replies`; 0 when there are none.
    double rtt_min() const;
    double rtt_avg() const;
    double rtt_max() const;
};

// Called on the calling thread for each reply as it arrives (for `labctl ping` lines).
using ReplyCallback = std::function<void(std::size_t probe_index, const Reply&)>;

// Runs every probe at once and returns one result per probe, in the same order.
// Per-probe problems (no route, missing bind interface, unreachable, refused) are results,
// not exceptions. Throws std::invalid_argument for a malformed probe (no address family,
// count < 1, negative times, TCP port 0, more than 65536 ICMP probes from one namespace),
// KernelError when
// a namespace cannot be entered or a socket cannot be opened (EPERM without CAP_NET_RAW,
// EMFILE), and whatever `on_reply` throws (the run is abandoned).
// With `stop`, a store of true (e.g. from a SIGINT handler) ends every probe at once, as
// its deadline would: the results so far are returned (ping(8)'s Ctrl-C summary).
std::vector<ProbeResult> run(const std::vector<Probe>& probes, const ReplyCallback& on_reply = {},
                             const std::atomic<bool>* stop = nullptr);

}  // namespace labctl::ping
