// Planning a ping run (which namespaces, which sockets, which identifiers) and opening
// its ICMP sockets inside the namespaces (run.hpp; the design is at the top of ping.cpp).

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

namespace labctl::ping::detail {

bool is_transient_send_error(int err) {
    return err == EAGAIN || err == EWOULDBLOCK || err == ENOBUFS || err == ENOMEM || err == EINTR;
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
    if (sa->sa_family == AF_INET) std::memcpy(&ss, sa, sizeof(sockaddr_in));
    else if (sa->sa_family == AF_INET6) std::memcpy(&ss, sa, sizeof(sockaddr_in6));
    return address_of(ss);
}

// Family and the family's bytes only: an IPv4 IpAddress may carry anything after byte 4.
bool same_address(const IpAddress& a, const IpAddress& b) {
    return a.family == b.family && std::equal(a.bytes.begin(), a.bytes.begin() + a.size(), b.bytes.begin());
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
    int fd = ::socket(s.family, SOCK_RAW | SOCK_NONBLOCK | SOCK_CLOEXEC, v4 ? int(IPPROTO_ICMP) : int(IPPROTO_ICMPV6));
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
        set_int_option(fd, SOL_IPV6, IPV6_RECVHOPLIMIT, 1, "setting IPV6_RECVHOPLIMIT on the " + what);
    }
    size_buffers(fd, s.buffer_probes);

    if (!s.ifname.empty()) {
        // A missing or misnamed interface is the probe's problem, not the run's.
        if (::setsockopt(fd, SOL_SOCKET, SO_BINDTODEVICE, s.ifname.data(), static_cast<socklen_t>(s.ifname.size())) <
            0) {
            s.setup_error = s.ifname + ": " + describe_errno(errno);
            return;
        }
        s.ifindex = ::if_nametoindex(s.ifname.c_str());
    }
    s.fd = std::move(owner);
}

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
    std::mt19937_64 random((std::uint64_t(entropy()) << 32) ^ entropy() ^
                           static_cast<std::uint64_t>(Clock::now().time_since_epoch().count()));
    token_ = random();

    // Namespaces by identity (nsfs device and inode), not by fd: two fds of one namespace
    // share its sockets and its identifier space.
    std::map<std::pair<dev_t, ino_t>, std::size_t> namespace_index;
    std::map<std::tuple<std::size_t, int, std::string>, std::size_t> socket_index;
    for (std::size_t p = 0; p < probes_.size(); ++p) {
        const Probe& probe = probes_[p];
        validate(probe, p);
        struct stat st {};
        const std::string label =
            "namespace " + (probe.netns_name.empty() ? "fd " + std::to_string(probe.netns_fd) : probe.netns_name);
        if (::fstat(probe.netns_fd, &st) < 0) throw_last_errno("ping probe " + std::to_string(p) + ": " + label);
        auto [ns_it, ns_new] = namespace_index.try_emplace({st.st_dev, st.st_ino}, namespaces_.size());
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
        if (++ns.ids_used > 65536) throw std::invalid_argument("ping: more than 65536 probes from one namespace");
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
        s.buffer_probes = s.ifname.empty() ? namespaces_[s.netns].probe_count[family_slot(s.family)] : s.probe_count;
}

// Raises the soft RLIMIT_NOFILE to the hard limit when the sockets might not fit under it
// (a 1,000-node lab needs 2,000). A process-wide change, made only when needed.
void ensure_fd_room(std::size_t fds) {
    rlimit limit{};
    if (::getrlimit(RLIMIT_NOFILE, &limit) < 0) return;
    const rlim_t wanted = fds + 256;  // headroom for the rest of the process
    if (limit.rlim_cur != RLIM_INFINITY && limit.rlim_cur < wanted && limit.rlim_cur < limit.rlim_max) {
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

}  // namespace labctl::ping::detail
