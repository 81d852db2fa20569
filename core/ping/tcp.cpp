// TCP probes: one socket per attempt made inside the namespace, a non-blocking connect()
// from the loop, and its outcome (run.hpp; the design is at the top of ping.cpp).

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
                UniqueFd fd(::socket(probe.destination.family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
                if (!fd) throw_last_errno("ping: opening a TCP socket");
                if (!probe.bind_ifname.empty()) {
                    if (::setsockopt(fd.get(), SOL_SOCKET, SO_BINDTODEVICE, probe.bind_ifname.data(),
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
    if (::connect(st.tcp.get(), reinterpret_cast<const sockaddr*>(&st.destination), st.destination_size) == 0) {
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

}  // namespace labctl::ping::detail
