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
#include "ping/run.hpp"

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

namespace detail {

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
    if (!refused && r.received == 0 && r.reason.empty()) r.reason = st.last_error.empty() ? "No reply" : st.last_error;

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
        if (st.tcp) finish(p, false, "No answer within " + std::to_string(probes_[p].timeout.count()) + " ms");
        else tcp_to_open_.push_back(p);
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

void PingRun::send_request(std::size_t p) {
    const Probe& probe = probes_[p];
    ProbeState& st = states_[p];
    const Socket& s = sockets_[st.socket];
    const int seq = st.next_seq;
    const int nth = seq - st.seq_base;  // 1 for the attempt's first request
    const auto planned = st.start + (nth - 1) * probe.interval;
    const auto payload = echo_payload(token_, static_cast<std::uint32_t>(p), static_cast<std::uint16_t>(seq));
    const auto message = encode_echo_request(s.family, st.id, static_cast<std::uint16_t>(seq), payload);
    Clock::time_point sent_at;
    auto send_once = [&]() -> int {
        sent_at = Clock::now();
        ssize_t n = ::sendto(s.fd.get(), message.data(), message.size(), MSG_DONTWAIT | MSG_NOSIGNAL,
                             reinterpret_cast<const sockaddr*>(&st.destination), st.destination_size);
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
    if (nth < probe.count) schedule(p, st.start + nth * probe.interval);
    else schedule(p, sent_at + probe.timeout);
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
        int n = ::epoll_wait(epoll_.get(), events.data(), static_cast<int>(events.size()), timeout_ms);
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

}  // namespace detail

std::vector<ProbeResult> run(const std::vector<Probe>& probes, const ReplyCallback& on_reply,
                             const std::atomic<bool>* stop) {
    detail::PingRun run(probes, on_reply, stop);
    return run.run();
}

}  // namespace labctl::ping
