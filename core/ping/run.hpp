#pragma once
// Internal to ping/: one ping::run() (PingRun) and what its files share. The design, and the
// kernel facts it relies on, are at the top of ping.cpp. The files, by concern:
//   ping.cpp     the run: starting probes, timers, sending requests, ending probes, the loop
//   setup.cpp    planning a run (namespaces, sockets, identifiers) and opening its sockets
//   tcp.cpp      TCP probes: a socket per attempt, connect(), its outcome
//   receive.cpp  echo replies and ICMP errors

#include <netinet/in.h>
#include <sched.h>
#include <sys/socket.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <exception>
#include <functional>
#include <queue>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "base/error.hpp"
#include "base/unique_fd.hpp"
#include "ping/ping.hpp"

namespace labctl::ping::detail {

using Clock = std::chrono::steady_clock;

// linux/icmp.h's ICMP_FILTER (level SOL_RAW); that header clashes with <netinet/ip_icmp.h>.
inline constexpr int kIcmpFilter = 1;
// Timers fired before the loop looks at the sockets again, so a burst of thousands of
// first requests does not leave replies piling up unread.
inline constexpr std::size_t kTimerBatch = 256;
// Datagrams read from one socket per wakeup, for the same fairness.
inline constexpr int kReadBatch = 1024;
// A send the kernel could not take right now (full socket buffer) is retried this often...
inline constexpr auto kSendRetry = std::chrono::milliseconds(1);
// ...for at least this long, then counted as sent and lost.
inline constexpr auto kMinSendPatience = std::chrono::milliseconds(50);

inline int family_slot(int family) { return family == AF_INET ? 0 : 1; }

struct Namespace {
    int fd = -1;        // the first of the caller's fds naming it
    std::string label;  // for messages: "namespace lab-h1" (or "namespace fd 7" unnamed)
    std::vector<std::size_t> sockets;
    std::uint16_t next_id = 0;
    std::size_t ids_used = 0;
    // Every probe from here by identifier, per family slot: for ICMP errors, which may be
    // read on another socket of the namespace than the probe's own.
    std::array<std::unordered_map<std::uint16_t, std::size_t>, 2> probe_by_id;
    std::array<std::size_t, 2> probe_count{};
};

struct Socket {
    std::size_t netns = 0;
    int family = AF_UNSPEC;
    std::string ifname;
    std::size_t probe_count = 0;    // 0: only hears ICMP errors for the namespace's probes
    std::size_t buffer_probes = 0;  // probes whose replies or errors it may have to hold
    UniqueFd fd;
    unsigned ifindex = 0;     // of ifname, for IPv6 link-local destinations
    std::string setup_error;  // the bind interface is unusable: its probes are refused
    std::unordered_map<std::uint16_t, std::size_t> probe_by_id;  // replies: own probes only
};

struct ProbeState {
    std::size_t netns = 0;
    std::size_t socket = 0;  // ICMP
    std::uint16_t id = 0;    // ICMP
    int next_seq = 1;
    int seq_base = 0;                        // the current attempt's requests are seq_base + 1 ... seq_base + count
    std::vector<Clock::time_point> sent_at;  // by seq - seq_base - 1
    std::vector<bool> answered;              // by seq - seq_base - 1
    Clock::time_point first_start;           // of the first attempt
    Clock::time_point start;                 // of the current attempt
    Clock::time_point due;                   // of the one live timer: the next request, the deadline, a retry
    Clock::duration backoff = kFirstBackoff;
    bool waiting_retry = false;  // between attempts
    // TCP: the current attempt's socket (connecting while open), or why none could be made.
    UniqueFd tcp;
    unsigned tcp_ifindex = 0;
    std::string tcp_setup_error;
    bool done = false;
    std::string last_error;  // of a probe that goes on after errors
    sockaddr_storage destination{};
    socklen_t destination_size = 0;
};

struct Timer {
    Clock::time_point at;
    std::size_t probe;
    auto operator<=>(const Timer&) const = default;
};

inline std::string family_name(int family) { return family == AF_INET ? "ICMP" : "ICMPv6"; }

// epoll data of a TCP probe's socket: the probe index with this bit; else a Socket index.
inline constexpr std::uint64_t kTcpTag = std::uint64_t(1) << 63;

inline bool is_tcp(const Probe& probe) { return probe.protocol == Protocol::tcp; }

// Runs work(i) for every i < n on up to 4 helper threads, each inside namespace ns_of(i)
// first: setns() changes only the calling thread, so the caller's thread stays where it
// is. A few threads suffice: entering a namespace and opening a socket take microseconds.
template <typename NsOf, typename Work>
void in_namespaces(std::size_t n, const NsOf& ns_of, const Work& work) {
    const std::size_t thread_count = std::min<std::size_t>(n, 4);
    std::vector<std::exception_ptr> failures(thread_count);
    std::vector<std::jthread> threads;  // joined on every way out, exceptions included
    threads.reserve(thread_count);
    for (std::size_t t = 0; t < thread_count; ++t) {
        threads.emplace_back([&, t] {
            try {
                for (std::size_t i = t; i < n; i += thread_count) {
                    const Namespace& ns = ns_of(i);
                    if (::setns(ns.fd, CLONE_NEWNET) < 0) throw_last_errno("ping: entering " + ns.label);
                    try {
                        work(i);
                    } catch (const KernelError& e) {
                        throw e.prefixed("ping: " + ns.label);
                    }
                }
            } catch (...) {
                failures[t] = std::current_exception();
            }
        });
    }
    threads.clear();  // joins
    for (auto& failure : failures)
        if (failure) std::rethrow_exception(failure);
}

bool is_transient_send_error(int err);
bool is_link_local(const IpAddress& a);
// The address in a sockaddr from recvmsg, as IpAddress.
IpAddress address_of(const sockaddr_storage& ss);
IpAddress address_of(const sockaddr* sa);
// Family and the family's bytes only: an IPv4 IpAddress may carry anything after byte 4.
bool same_address(const IpAddress& a, const IpAddress& b);
void set_int_option(int fd, int level, int name, int value, const std::string& what);
// Socket buffers large enough for a burst of thousands of replies (see setup.cpp).
void size_buffers(int fd, std::size_t probes);
// Runs on a helper thread that is inside the socket's namespace.
void open_socket(Socket& s);
// Throws std::invalid_argument for a probe that cannot run.
void validate(const Probe& probe, std::size_t index);
// Raises the soft RLIMIT_NOFILE when `fds` sockets might not fit under it.
void ensure_fd_room(std::size_t fds);

class PingRun {
public:
    PingRun(const std::vector<Probe>& probes, const ReplyCallback& on_reply, const std::atomic<bool>* stop)
        : probes_(probes), on_reply_(on_reply), stop_(stop), results_(probes.size()), states_(probes.size()) {}

    std::vector<ProbeResult> run() {
        plan();
        open_sockets();
        start();
        loop();
        return std::move(results_);
    }

private:
    void plan();
    void open_sockets();
    void start();
    void loop();
    void on_timer(std::size_t p);
    void restart(std::size_t p);
    void open_tcp_sockets();
    void connect_tcp(std::size_t p);
    void tcp_done(std::size_t p, int err);
    void send_request(std::size_t p);
    void read_replies(Socket& s);
    void read_errors(Socket& s);
    // Ends probe p; a refusal of a probe that does not stop on errors only records the
    // reason, unless `always` (its interface is unusable: nothing could ever be sent).
    void finish(std::size_t p, bool refused, std::string reason, bool always = false);
    void schedule(std::size_t p, Clock::time_point at) {
        states_[p].due = at;
        timers_.push({at, p});
    }

    const std::vector<Probe>& probes_;
    const ReplyCallback& on_reply_;
    const std::atomic<bool>* stop_;
    std::vector<ProbeResult> results_;
    std::vector<ProbeState> states_;
    std::vector<Namespace> namespaces_;
    std::vector<Socket> sockets_;
    std::priority_queue<Timer, std::vector<Timer>, std::greater<>> timers_;
    std::vector<std::size_t> tcp_to_open_;  // TCP attempts due, opened in one batch
    std::size_t tcp_probes_ = 0;
    UniqueFd epoll_;
    std::uint64_t token_ = 0;
    std::size_t active_ = 0;
};

}  // namespace labctl::ping::detail
