// The pinger's sockets and event loop.
//
// Why raw sockets (SOCK_RAW, IPPROTO_ICMP / IPPROTO_ICMPV6) and not ping sockets
// (SOCK_DGRAM, IPPROTO_ICMP):
// - Ping sockets need the caller's group inside net.ipv4.ping_group_range of the socket's
//   namespace, and a new namespace starts with "1 0" (nobody, root included). Using them
//   would mean writing a sysctl into every lab namespace behind the user's back. Raw
//   sockets need CAP_NET_RAW, which labctl has anyway (it needs CAP_NET_ADMIN and
//   CAP_SYS_ADMIN to build labs at all).
// - With raw sockets we choose the identifier, so ONE socket per (namespace, family, bind
//   interface) carries every probe from there: a 100-node all-pairs run (9,900 probes) needs
//   100 to 200 fds, not 9,900. Each probe gets an identifier unique in its namespace; a reply
//   counts only if identifier, sequence, source address and all 56 payload bytes (which
//   carry a per-run random token) match, so neither our other probes nor another pinger in
//   the same namespace (every raw ICMP socket there sees every reply) can be mistaken for it.
// - ICMP errors: IP_RECVERR / IPV6_RECVERR queue each ICMP error about a request we sent on
//   the socket's error queue, with the quoted request (identifier, sequence), the original
//   destination and the sender of the error (SO_EE_OFFENDER). The receive filter
//   (ICMP_FILTER / ICMP6_FILTER) passes echo replies only, so each error is seen once.
//   Kernel fact: an error the namespace sends itself (ARP/ND gave up) arrives through lo,
//   and a raw IPv4 socket bound to eth0 never hears it. So each (namespace, family) also
//   has an unbound socket (receiving nothing else when no probe uses it), and errors are
//   matched against every probe of the namespace, whichever socket reads them.
//   Kernel fact: with IP_RECVERR a raw socket also copies each error into sk_err, which the
//   next sendto() or recvmsg() on that socket returns (and clears) whichever probe it was
//   about; so a failed sendto is retried once before it counts, and recvmsg errors are
//   skipped (the details are on the error queue).
//
// TCP probes: one SOCK_STREAM socket per attempt, made inside the namespace on a helper
// thread like the ICMP sockets, then a non-blocking connect() from the loop, whose result
// (SO_ERROR) epoll reports as EPOLLOUT. A socket keeps its namespace, so the loop thread
// connects it from wherever it is. The socket is closed normally (FIN), so a server sees
// a client that went away, not a reset. Kernel fact: in SYN-SENT an ICMP unreachable is a
// hard error (tcp_v4_err), so "no route" ends the attempt at once, as for pings.
//
// Retries: an attempt that ended with the wrong outcome waits on the timer heap (backoff)
// and starts over; ICMP sequence numbers go on from where the last attempt stopped, so a
// late reply to an earlier attempt never counts for the current one.

#include "ping/ping.hpp"

#include <linux/errqueue.h>
#include <net/if.h>
#include <netinet/icmp6.h>
#include <netinet/in.h>
#include <netinet/ip_icmp.h>
#include <sched.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstring>
#include <exception>
#include <map>
#include <queue>
#include <random>
#include <stdexcept>
#include <thread>
#include <tuple>
#include <unordered_map>

#include "base/error.hpp"
#include "base/unique_fd.hpp"
#include "ping/icmp.hpp"

namespace labctl::ping {

namespace {

double rtt_fold(const std::vector<Reply>& replies, double (*pick)(double, double)) {
    if (replies.empty()) return 0;
    double v = replies.front().rtt_ms;
    for (const auto& r : replies) v = pick(v, r.rtt_ms);
    return v;
}

}  // namespace

double ProbeResult::rtt_min() const {
    return rtt_fold(replies, [](double a, double b) { return std::min(a, b); });
}

double ProbeResult::rtt_max() const {
    return rtt_fold(replies, [](double a, double b) { return std::max(a, b); });
}

double ProbeResult::rtt_avg() const {
    if (replies.empty()) return 0;
    double sum = 0;
    for (const auto& r : replies) sum += r.rtt_ms;
    return sum / static_cast<double>(replies.size());
}

namespace {

using Clock = std::chrono::steady_clock;

// linux/icmp.h's ICMP_FILTER (level SOL_RAW); that header clashes with <netinet/ip_icmp.h>.
constexpr int kIcmpFilter = 1;
// Timers fired before the loop looks at the sockets again, so a burst of thousands of
// first requests does not leave replies piling up unread.
constexpr std::size_t kTimerBatch = 256;
// Datagrams read from one socket per wakeup, for the same fairness.
constexpr int kReadBatch = 1024;
// A send the kernel could not take right now (full socket buffer) is retried this often...
constexpr auto kSendRetry = std::chrono::milliseconds(1);
// ...for at least this long, then counted as sent and lost.
constexpr auto kMinSendPatience = std::chrono::milliseconds(50);

int family_slot(int family) { return family == AF_INET ? 0 : 1; }

struct Namespace {
    int fd = -1;  // the first of the caller's fds naming it
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
    std::size_t probe_count = 0;  // 0: only hears ICMP errors for the namespace's probes
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
    int seq_base = 0;  // the current attempt's requests are seq_base + 1 ... seq_base + count
    std::vector<Clock::time_point> sent_at;  // by seq - seq_base - 1
    std::vector<bool> answered;              // by seq - seq_base - 1
    Clock::time_point first_start;           // of the first attempt
    Clock::time_point start;                 // of the current attempt
    Clock::time_point due;  // of the one live timer: the next request, the deadline, a retry
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

std::string family_name(int family) { return family == AF_INET ? "ICMP" : "ICMPv6"; }

// epoll data of a TCP probe's socket: the probe index with this bit; else a Socket index.
constexpr std::uint64_t kTcpTag = std::uint64_t(1) << 63;

bool is_tcp(const Probe& probe) { return probe.protocol == Protocol::tcp; }

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

bool is_transient_send_error(int err) {
    return err == EAGAIN || err == EWOULDBLOCK || err == ENOBUFS || err == ENOMEM ||
           err == EINTR;
}

bool is_link_local(const IpAddress& a) {
    return a.family == AF_INET6 && a.bytes[0] == 0xfe && (a.bytes[1] & 0xc0) == 0x80;
}

// The address in a sockaddr from recvmsg, as IpAddress.
IpAddress address_of(const sockaddr_storage& ss) {
    IpAddress a;
    if (ss.ss_family == AF_INET) {
        const auto& sin = reinterpret_cast<const sockaddr_in&>(ss);
        a.family = AF_INET;
        std::memcpy(a.bytes.data(), &sin.sin_addr, 4);
    } else if (ss.ss_family == AF_INET6) {
        const auto& sin6 = reinterpret_cast<const sockaddr_in6&>(ss);
        a.family = AF_INET6;
        std::memcpy(a.bytes.data(), &sin6.sin6_addr, 16);
    }
    return a;
}

IpAddress address_of(const sockaddr* sa) {
    sockaddr_storage ss{};
    if (sa->sa_family == AF_INET)
        std::memcpy(&ss, sa, sizeof(sockaddr_in));
    else if (sa->sa_family == AF_INET6)
        std::memcpy(&ss, sa, sizeof(sockaddr_in6));
    return address_of(ss);
}

// Family and the family's bytes only: an IPv4 IpAddress may carry anything after byte 4.
bool same_address(const IpAddress& a, const IpAddress& b) {
    return a.family == b.family && std::equal(a.bytes.begin(), a.bytes.begin() + a.size(),
                                              b.bytes.begin());
}

void set_int_option(int fd, int level, int name, int value, const std::string& what) {
    if (::setsockopt(fd, level, name, &value, sizeof value) < 0) throw_last_errno(what);
}

// Socket buffers large enough for a burst of thousands of replies read only after the
// requests went out. The FORCE variants (CAP_NET_ADMIN) pass net.core.rmem_max; without
// the capability the plain ones are capped by it, which still works for small runs.
void size_buffers(int fd, std::size_t probes) {
    int bytes = static_cast<int>(std::min<std::size_t>(256 * 1024 + probes * 2048, 32 << 20));
    if (::setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &bytes, sizeof bytes) < 0)
        set_int_option(fd, SOL_SOCKET, SO_RCVBUF, bytes, "setting SO_RCVBUF");
    if (::setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &bytes, sizeof bytes) < 0)
        set_int_option(fd, SOL_SOCKET, SO_SNDBUF, bytes, "setting SO_SNDBUF");
}

// Runs on a helper thread that is inside the socket's namespace.
void open_socket(Socket& s) {
    const bool v4 = s.family == AF_INET;
    const std::string what = family_name(s.family) + " socket";
    int fd = ::socket(s.family, SOCK_RAW | SOCK_NONBLOCK | SOCK_CLOEXEC,
                      v4 ? int(IPPROTO_ICMP) : int(IPPROTO_ICMPV6));
    if (fd < 0) throw_last_errno("opening a raw " + what);
    UniqueFd owner(fd);

    const bool errors_only = s.probe_count == 0;
    if (v4) {
        // A set bit drops that type; only echo replies reach the receive queue.
        std::uint32_t filter = errors_only ? ~0u : ~(std::uint32_t(1) << ICMP_ECHOREPLY);
        if (::setsockopt(fd, SOL_RAW, kIcmpFilter, &filter, sizeof filter) < 0)
            throw_last_errno("setting ICMP_FILTER on the " + what);
        set_int_option(fd, SOL_IP, IP_RECVERR, 1, "setting IP_RECVERR on the " + what);
    } else {
        icmp6_filter filter;
        ICMP6_FILTER_SETBLOCKALL(&filter);
        if (!errors_only) ICMP6_FILTER_SETPASS(ICMP6_ECHO_REPLY, &filter);
        if (::setsockopt(fd, IPPROTO_ICMPV6, ICMP6_FILTER, &filter, sizeof filter) < 0)
            throw_last_errno("setting ICMP6_FILTER on the " + what);
        set_int_option(fd, SOL_IPV6, IPV6_RECVERR, 1, "setting IPV6_RECVERR on the " + what);
        set_int_option(fd, SOL_IPV6, IPV6_RECVHOPLIMIT, 1,
                       "setting IPV6_RECVHOPLIMIT on the " + what);
    }
    size_buffers(fd, s.buffer_probes);

    if (!s.ifname.empty()) {
        // A missing or misnamed interface is the probe's problem, not the run's.
        if (::setsockopt(fd, SOL_SOCKET, SO_BINDTODEVICE, s.ifname.data(),
                         static_cast<socklen_t>(s.ifname.size())) < 0) {
            s.setup_error = s.ifname + ": " + describe_errno(errno);
            return;
        }
        s.ifindex = ::if_nametoindex(s.ifname.c_str());
    }
    s.fd = std::move(owner);
}

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

void validate(const Probe& probe, std::size_t index) {
    auto fail = [&](const std::string& what) {
        throw std::invalid_argument("ping probe " + std::to_string(index) + ": " + what);
    };
    if (probe.netns_fd < 0) fail("no network namespace fd");
    if (probe.destination.family != AF_INET && probe.destination.family != AF_INET6)
        fail("destination is neither IPv4 nor IPv6");
    if (probe.count < 1 || probe.count > 65535) fail("count must be 1 to 65535");
    if (probe.interval.count() < 0) fail("negative interval");
    if (probe.timeout.count() < 0) fail("negative timeout");
    if (probe.retry_for.count() < 0) fail("negative retry time");
    if (is_tcp(probe) && probe.port == 0) fail("TCP port 0");
}

void PingRun::plan() {
    std::random_device entropy;
    std::mt19937_64 random(
        (std::uint64_t(entropy()) << 32) ^ entropy() ^
        static_cast<std::uint64_t>(Clock::now().time_since_epoch().count()));
    token_ = random();

    // Namespaces by identity (nsfs device and inode), not by fd: two fds of one namespace
    // share its sockets and its identifier space.
    std::map<std::pair<dev_t, ino_t>, std::size_t> namespace_index;
    std::map<std::tuple<std::size_t, int, std::string>, std::size_t> socket_index;
    for (std::size_t p = 0; p < probes_.size(); ++p) {
        const Probe& probe = probes_[p];
        validate(probe, p);
        struct stat st{};
        const std::string label = "namespace " + (probe.netns_name.empty() ? "fd " + std::to_string(probe.netns_fd)
                                                                           : probe.netns_name);
        if (::fstat(probe.netns_fd, &st) < 0) throw_last_errno("ping probe " + std::to_string(p) + ": " + label);
        auto [ns_it, ns_new] = namespace_index.try_emplace({st.st_dev, st.st_ino},
                                                           namespaces_.size());
        if (ns_new) {
            Namespace ns;
            ns.fd = probe.netns_fd;
            ns.label = label;
            ns.next_id = static_cast<std::uint16_t>(random());
            namespaces_.push_back(std::move(ns));
        }
        Namespace& ns = namespaces_[ns_it->second];
        states_[p].netns = ns_it->second;
        if (is_tcp(probe)) {
            ++tcp_probes_;
            continue;  // a socket per attempt, made when it is due
        }

        auto socket_for = [&](const std::string& ifname) -> std::size_t {
            auto key = std::make_tuple(ns_it->second, probe.destination.family, ifname);
            auto [it, added] = socket_index.try_emplace(key, sockets_.size());
            if (added) {
                Socket s;
                s.netns = ns_it->second;
                s.family = probe.destination.family;
                s.ifname = ifname;
                ns.sockets.push_back(sockets_.size());
                sockets_.push_back(std::move(s));
            }
            return it->second;
        };
        socket_for("");  // the namespace's unbound socket hears every ICMP error there
        const std::size_t socket = socket_for(probe.bind_ifname);
        Socket& s = sockets_[socket];
        ++s.probe_count;

        // Identifiers are unique per namespace, across its sockets: every raw ICMP socket of
        // a namespace receives every reply there.
        if (++ns.ids_used > 65536)
            throw std::invalid_argument("ping: more than 65536 probes from one namespace");
        ProbeState& st_p = states_[p];
        st_p.socket = socket;
        st_p.id = ns.next_id++;
        s.probe_by_id.emplace(st_p.id, p);
        ns.probe_by_id[family_slot(s.family)].emplace(st_p.id, p);
        ++ns.probe_count[family_slot(s.family)];
        st_p.sent_at.resize(probe.count);
        st_p.answered.resize(probe.count);
    }
    for (Socket& s : sockets_)
        s.buffer_probes = s.ifname.empty() ? namespaces_[s.netns].probe_count[family_slot(s.family)]
                                           : s.probe_count;
}

// Raises the soft RLIMIT_NOFILE to the hard limit when the sockets might not fit under it
// (a 1,000-node lab needs 2,000). A process-wide change, made only when needed.
void ensure_fd_room(std::size_t fds) {
    rlimit limit{};
    if (::getrlimit(RLIMIT_NOFILE, &limit) < 0) return;
    const rlim_t wanted = fds + 256;  // headroom for the rest of the process
    if (limit.rlim_cur != RLIM_INFINITY && limit.rlim_cur < wanted &&
        limit.rlim_cur < limit.rlim_max) {
        limit.rlim_cur = limit.rlim_max;
        ::setrlimit(RLIMIT_NOFILE, &limit);  // on failure, socket() reports EMFILE
    }
}

void PingRun::open_sockets() {
    ensure_fd_room(sockets_.size() + tcp_probes_);
    std::vector<std::size_t> with_sockets;
    for (std::size_t n = 0; n < namespaces_.size(); ++n)
        if (!namespaces_[n].sockets.empty()) with_sockets.push_back(n);
    in_namespaces(
        with_sockets.size(), [&](std::size_t i) -> const Namespace& { return namespaces_[with_sockets[i]]; },
        [&](std::size_t i) {
            for (std::size_t s : namespaces_[with_sockets[i]].sockets) open_socket(sockets_[s]);
        });
}

void PingRun::start() {
    const auto now = Clock::now();
    active_ = probes_.size();
    for (std::size_t p = 0; p < probes_.size(); ++p) {
        ProbeState& st = states_[p];
        const bool tcp = is_tcp(probes_[p]);
        st.first_start = st.start = now;
        results_[p].attempts = 1;
        if (!tcp && !sockets_[st.socket].setup_error.empty()) {
            finish(p, true, sockets_[st.socket].setup_error, true);
            continue;
        }
        const IpAddress& dst = probes_[p].destination;
        const std::uint16_t port = htons(tcp ? probes_[p].port : 0);
        if (dst.family == AF_INET) {
            auto& sin = reinterpret_cast<sockaddr_in&>(st.destination);
            sin.sin_family = AF_INET;
            sin.sin_port = port;
            std::memcpy(&sin.sin_addr, dst.bytes.data(), 4);
            st.destination_size = sizeof sin;
        } else {
            auto& sin6 = reinterpret_cast<sockaddr_in6&>(st.destination);
            sin6.sin6_family = AF_INET6;
            sin6.sin6_port = port;
            std::memcpy(&sin6.sin6_addr, dst.bytes.data(), 16);
            if (!tcp && is_link_local(dst)) sin6.sin6_scope_id = sockets_[st.socket].ifindex;
            st.destination_size = sizeof sin6;
        }
        schedule(p, now);
    }
}

void PingRun::finish(std::size_t p, bool refused, std::string reason, bool always) {
    ProbeState& st = states_[p];
    const Probe& probe = probes_[p];
    if (st.done || st.waiting_retry) return;
    if (refused && !is_tcp(probe) && !probe.stop_on_error && !always) {
        // Like ping(8): note the error and go on with the next request. The first error
        // is the reason: later ones may be missing (routers rate-limit ICMP errors), so
        // the first one seen in any round is what the run reports.
        if (st.last_error.empty()) st.last_error = std::move(reason);
        return;
    }
    ProbeResult& r = results_[p];
    r.refused = refused;
    r.reason = std::move(reason);
    if (!refused && r.received == 0 && r.reason.empty())
        r.reason = st.last_error.empty() ? "No reply" : st.last_error;

    const auto now = Clock::now();
    const auto deadline = st.first_start + probe.retry_for;
    // Sequence numbers are 16 bits; a probe that would run out of them stops retrying.
    const bool seq_room = is_tcp(probe) || st.next_seq - 1 + probe.count <= 65535;
    if (!always && (r.received > 0) != probe.want_answer && now < deadline && seq_room) {
        st.waiting_retry = true;
        st.tcp.reset();
        schedule(p, std::min<Clock::time_point>(now + st.backoff, deadline));
        st.backoff = std::min<Clock::duration>(st.backoff * 2, kMaxBackoff);
        return;
    }
    st.tcp.reset();
    st.done = true;
    --active_;
}

void PingRun::on_timer(std::size_t p) {
    ProbeState& st = states_[p];
    if (st.waiting_retry) {
        restart(p);
    } else if (is_tcp(probes_[p])) {
        if (st.tcp)
            finish(p, false, "No answer within " + std::to_string(probes_[p].timeout.count()) + " ms");
        else
            tcp_to_open_.push_back(p);
    } else if (st.next_seq - st.seq_base <= probes_[p].count) {
        send_request(p);
    } else {
        finish(p, false, {});  // the deadline after the last request
    }
}

void PingRun::restart(std::size_t p) {
    ProbeState& st = states_[p];
    st.waiting_retry = false;
    const int attempts = results_[p].attempts + 1;
    results_[p] = ProbeResult{};
    results_[p].attempts = attempts;
    st.start = Clock::now();
    st.last_error.clear();
    if (is_tcp(probes_[p])) {
        tcp_to_open_.push_back(p);
        return;
    }
    st.seq_base = st.next_seq - 1;
    std::fill(st.answered.begin(), st.answered.end(), false);
    send_request(p);
}

void PingRun::open_tcp_sockets() {
    std::vector<std::size_t> due;
    due.swap(tcp_to_open_);
    // One helper-thread visit per namespace, however many of its probes are due.
    std::map<std::size_t, std::vector<std::size_t>> by_netns;
    for (std::size_t p : due) by_netns[states_[p].netns].push_back(p);
    std::vector<const std::pair<const std::size_t, std::vector<std::size_t>>*> groups;
    for (const auto& group : by_netns) groups.push_back(&group);
    in_namespaces(
        groups.size(), [&](std::size_t g) -> const Namespace& { return namespaces_[groups[g]->first]; },
        [&](std::size_t g) {
            for (std::size_t p : groups[g]->second) {
                ProbeState& st = states_[p];
                const Probe& probe = probes_[p];
                UniqueFd fd(::socket(probe.destination.family,
                                     SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
                if (!fd) throw_last_errno("ping: opening a TCP socket");
                if (!probe.bind_ifname.empty()) {
                    if (::setsockopt(fd.get(), SOL_SOCKET, SO_BINDTODEVICE,
                                     probe.bind_ifname.data(),
                                     static_cast<socklen_t>(probe.bind_ifname.size())) < 0) {
                        st.tcp_setup_error = probe.bind_ifname + ": " + describe_errno(errno);
                        continue;
                    }
                    st.tcp_ifindex = ::if_nametoindex(probe.bind_ifname.c_str());
                }
                st.tcp = std::move(fd);
            }
        });
    for (std::size_t p : due) connect_tcp(p);
}

void PingRun::connect_tcp(std::size_t p) {
    ProbeState& st = states_[p];
    if (!st.tcp_setup_error.empty()) {
        finish(p, true, st.tcp_setup_error, true);
        return;
    }
    if (is_link_local(probes_[p].destination))
        reinterpret_cast<sockaddr_in6&>(st.destination).sin6_scope_id = st.tcp_ifindex;
    st.start = Clock::now();
    results_[p].sent = 1;
    if (::connect(st.tcp.get(), reinterpret_cast<const sockaddr*>(&st.destination),
                  st.destination_size) == 0) {
        tcp_done(p, 0);  // loopback may complete at once
        return;
    }
    if (errno != EINPROGRESS) {
        tcp_done(p, errno);  // no route, prohibited...
        return;
    }
    epoll_event ev{};
    ev.events = EPOLLOUT;  // EPOLLERR and EPOLLHUP are always reported
    ev.data.u64 = kTcpTag | p;
    if (::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, st.tcp.get(), &ev) < 0)
        throw_last_errno("ping: adding a TCP socket to epoll");
    schedule(p, st.start + probes_[p].timeout);
}

void PingRun::tcp_done(std::size_t p, int err) {
    ProbeState& st = states_[p];
    const auto now = Clock::now();
    st.tcp.reset();  // closing also removes it from epoll
    if (err != 0) {
        finish(p, true, describe_errno(err));
        return;
    }
    const Reply reply{1, std::chrono::duration<double, std::milli>(now - st.start).count(), -1};
    results_[p].replies.push_back(reply);
    results_[p].received = 1;
    if (on_reply_) on_reply_(p, reply);
    finish(p, false, {});
}

void PingRun::send_request(std::size_t p) {
    const Probe& probe = probes_[p];
    ProbeState& st = states_[p];
    const Socket& s = sockets_[st.socket];
    const int seq = st.next_seq;
    const int nth = seq - st.seq_base;  // 1 for the attempt's first request
    const auto planned = st.start + (nth - 1) * probe.interval;
    const auto payload = echo_payload(token_, static_cast<std::uint32_t>(p),
                                      static_cast<std::uint16_t>(seq));
    const auto message = encode_echo_request(s.family, st.id, static_cast<std::uint16_t>(seq),
                                             payload);
    Clock::time_point sent_at;
    auto send_once = [&]() -> int {
        sent_at = Clock::now();
        ssize_t n = ::sendto(s.fd.get(), message.data(), message.size(),
                             MSG_DONTWAIT | MSG_NOSIGNAL,
                             reinterpret_cast<const sockaddr*>(&st.destination),
                             st.destination_size);
        return n < 0 ? errno : 0;
    };
    int err = send_once();
    // The first failure may be another probe's ICMP error left in sk_err (IP_RECVERR); it
    // is cleared by being returned, so a second failure is this request's own.
    if (err != 0 && !is_transient_send_error(err)) err = send_once();

    if (err != 0 && is_transient_send_error(err)) {
        const auto now = Clock::now();
        if (now < planned + std::max<Clock::duration>(probe.interval, kMinSendPatience)) {
            schedule(p, now + kSendRetry);
            return;
        }
        err = 0;  // gave up waiting for buffer space: the request is lost, like a drop
    }
    if (err != 0) {
        finish(p, true, describe_errno(err));
        if (probe.stop_on_error) return;
        // Not sent, but its turn is used: the next request keeps the schedule.
        ++st.next_seq;
        if (nth < probe.count) schedule(p, st.start + nth * probe.interval);
        else schedule(p, Clock::now() + probe.timeout);
        return;
    }
    st.sent_at[nth - 1] = sent_at;
    ++st.next_seq;
    ++results_[p].sent;
    if (nth < probe.count)
        schedule(p, st.start + nth * probe.interval);
    else
        schedule(p, sent_at + probe.timeout);
}

void PingRun::read_replies(Socket& s) {
    std::array<std::uint8_t, 4096> buffer;
    alignas(cmsghdr) std::array<char, 256> control;
    for (int i = 0; i < kReadBatch; ++i) {
        sockaddr_storage from{};
        iovec iov{buffer.data(), buffer.size()};
        msghdr msg{};
        msg.msg_name = &from;
        msg.msg_namelen = sizeof from;
        msg.msg_iov = &iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.data();
        msg.msg_controllen = control.size();
        ssize_t n = ::recvmsg(s.fd.get(), &msg, MSG_DONTWAIT);
        const auto now = Clock::now();
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) return;
            // EINTR, or sk_err copied from an ICMP error (IP_RECVERR) and cleared by being
            // returned: the error itself waits on the error queue.
            continue;
        }

        std::span<const std::uint8_t> message(buffer.data(),
                                              std::min<std::size_t>(n, buffer.size()));
        int ttl = -1;
        if (s.family == AF_INET) {
            auto packet = parse_ipv4(message);
            if (!packet) continue;
            ttl = packet->ttl;
            message = packet->payload;
        } else {
            for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c))
                if (c->cmsg_level == SOL_IPV6 && c->cmsg_type == IPV6_HOPLIMIT)
                    std::memcpy(&ttl, CMSG_DATA(c), sizeof ttl);
        }
        auto header = parse_icmp_header(message);
        if (!header || !is_echo_reply(s.family, header->type) || header->code != 0) continue;
        auto it = s.probe_by_id.find(header->id);
        if (it == s.probe_by_id.end()) continue;
        const std::size_t p = it->second;
        ProbeState& st = states_[p];
        const int seq = header->seq;
        if (st.done || st.waiting_retry || seq <= st.seq_base || seq >= st.next_seq) continue;
        if (!same_address(address_of(from), probes_[p].destination)) continue;
        const auto expected = echo_payload(token_, static_cast<std::uint32_t>(p), header->seq);
        auto body = message.subspan(kIcmpHeaderSize);
        if (!std::equal(body.begin(), body.end(), expected.begin(), expected.end())) continue;
        const int nth = seq - st.seq_base;
        if (st.answered[nth - 1]) continue;  // a duplicate (ping's "DUP!") is not counted
        st.answered[nth - 1] = true;

        Reply reply{seq,
                    std::chrono::duration<double, std::milli>(now - st.sent_at[nth - 1]).count(),
                    ttl};
        ProbeResult& r = results_[p];
        r.replies.push_back(reply);
        ++r.received;
        if (on_reply_) on_reply_(p, reply);
        if (probes_[p].stop_at_first_reply || r.received == probes_[p].count)
            finish(p, false, {});
    }
}

void PingRun::read_errors(Socket& s) {
    std::array<std::uint8_t, 2048> buffer;
    alignas(cmsghdr) std::array<char, 512> control;
    for (int i = 0; i < kReadBatch; ++i) {
        sockaddr_storage original_destination{};
        iovec iov{buffer.data(), buffer.size()};
        msghdr msg{};
        msg.msg_name = &original_destination;
        msg.msg_namelen = sizeof original_destination;
        msg.msg_iov = &iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.data();
        msg.msg_controllen = control.size();
        ssize_t n = ::recvmsg(s.fd.get(), &msg, MSG_ERRQUEUE | MSG_DONTWAIT);
        if (n < 0) {
            if (errno == EINTR) continue;
            break;  // EAGAIN: the queue is empty
        }
        const sock_extended_err* error = nullptr;
        for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c))
            if ((c->cmsg_level == SOL_IP && c->cmsg_type == IP_RECVERR) ||
                (c->cmsg_level == SOL_IPV6 && c->cmsg_type == IPV6_RECVERR))
                error = reinterpret_cast<const sock_extended_err*>(CMSG_DATA(c));
        // Local errors (EMSGSIZE...) carry no request to match; sendto() reported them.
        if (!error || (error->ee_origin != SO_EE_ORIGIN_ICMP &&
                       error->ee_origin != SO_EE_ORIGIN_ICMP6))
            continue;
        if (!is_fatal_error(s.family, error->ee_type, error->ee_code)) continue;

        // The data is the request the error quotes, from its ICMP header on.
        std::span<const std::uint8_t> quoted(buffer.data(),
                                             std::min<std::size_t>(n, buffer.size()));
        auto header = parse_icmp_header(quoted);
        if (!header || !is_echo_request(s.family, header->type)) continue;
        const auto& by_id = namespaces_[s.netns].probe_by_id[family_slot(s.family)];
        auto it = by_id.find(header->id);
        if (it == by_id.end()) continue;
        const std::size_t p = it->second;
        const ProbeState& st = states_[p];
        if (st.done || st.waiting_retry || header->seq <= st.seq_base ||
            header->seq >= st.next_seq)
            continue;
        if (!same_address(address_of(original_destination), probes_[p].destination)) continue;
        // Routers quote at least 8 bytes past the IP header; Linux quotes much more. Check
        // the payload's key when it is there.
        auto body = quoted.subspan(kIcmpHeaderSize);
        if (body.size() >= kPayloadKeySize) {
            const auto expected =
                echo_payload(token_, static_cast<std::uint32_t>(p), header->seq);
            if (!std::equal(expected.begin(), expected.begin() + kPayloadKeySize, body.begin()))
                continue;
        }

        std::string reason = describe_icmp_error(s.family, error->ee_type, error->ee_code);
        IpAddress offender = address_of(SO_EE_OFFENDER(error));
        if (offender.family == s.family) reason += " from " + offender.to_string();
        finish(p, true, std::move(reason));
    }
    // The queue is drained; clear the sk_err copy too, or EPOLLERR would keep firing.
    int pending = 0;
    socklen_t size = sizeof pending;
    ::getsockopt(s.fd.get(), SOL_SOCKET, SO_ERROR, &pending, &size);
}

void PingRun::loop() {
    if (active_ == 0) return;
    epoll_.reset(::epoll_create1(EPOLL_CLOEXEC));
    if (!epoll_) throw_last_errno("ping: creating an epoll instance");
    for (std::size_t i = 0; i < sockets_.size(); ++i) {
        if (!sockets_[i].fd) continue;
        epoll_event ev{};
        ev.events = EPOLLIN;  // EPOLLERR (error queue not empty) is always reported
        ev.data.u64 = i;
        if (::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, sockets_[i].fd.get(), &ev) < 0)
            throw_last_errno("ping: adding a socket to epoll");
    }

    std::vector<epoll_event> events(256);
    while (active_ > 0) {
        if (stop_ && stop_->load()) {
            for (std::size_t p = 0; p < states_.size(); ++p) finish(p, false, {});
            break;
        }
        const auto now = Clock::now();
        std::size_t fired = 0;
        while (!timers_.empty() && timers_.top().at <= now && fired < kTimerBatch) {
            const Timer timer = timers_.top();
            timers_.pop();
            const ProbeState& st = states_[timer.probe];
            if (st.done || st.due != timer.at) continue;  // superseded
            on_timer(timer.probe);
            ++fired;
        }
        if (!tcp_to_open_.empty()) open_tcp_sockets();
        if (active_ == 0) break;

        int timeout_ms = 0;
        if (fired < kTimerBatch && !timers_.empty()) {
            auto wait = timers_.top().at - Clock::now();
            if (wait > Clock::duration::zero()) {
                auto ms = std::chrono::ceil<std::chrono::milliseconds>(wait).count();
                timeout_ms = static_cast<int>(std::min<long long>(ms, INT_MAX));
            }
        }
        int n = ::epoll_wait(epoll_.get(), events.data(), static_cast<int>(events.size()),
                             timeout_ms);
        if (n < 0) {
            if (errno == EINTR) continue;
            throw_last_errno("ping: waiting for replies");
        }
        for (int i = 0; i < n; ++i) {
            if (events[i].data.u64 & kTcpTag) {
                const std::size_t p = events[i].data.u64 & ~kTcpTag;
                ProbeState& st = states_[p];
                if (!st.tcp || st.done || st.waiting_retry) continue;
                int err = 0;
                socklen_t size = sizeof err;
                if (::getsockopt(st.tcp.get(), SOL_SOCKET, SO_ERROR, &err, &size) < 0) err = errno;
                if (err == 0 && !(events[i].events & EPOLLOUT)) err = ECONNRESET;
                tcp_done(p, err);
                continue;
            }
            Socket& s = sockets_[events[i].data.u64];
            if (events[i].events & EPOLLERR) read_errors(s);
            if (events[i].events & EPOLLIN) read_replies(s);
        }
    }
}

}  // namespace

std::vector<ProbeResult> run(const std::vector<Probe>& probes, const ReplyCallback& on_reply,
                             const std::atomic<bool>* stop) {
    PingRun run(probes, on_reply, stop);
    return run.run();
}

}  // namespace labctl::ping
