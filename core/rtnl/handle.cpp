// Per-namespace handles and dumps.
#include <net/if.h>
#include <netinet/in.h>

#include <libmnl/libmnl.h>
#include <linux/if_addr.h>
#include <linux/if_link.h>
#include <linux/neighbour.h>
#include <linux/if_tun.h>
#include <linux/rtnetlink.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <sys/epoll.h>
#include <sys/socket.h>

#include <unordered_set>

#include "base/unique_fd.hpp"

#include "base/error.hpp"
#include "rtnl/rtnl.hpp"

namespace labctl::rtnl {

Handle Handle::open_in(const netns::NetnsHandle& ns) {
    try {
        return Handle(netns::run_in(ns, [] { return nl::Socket::open_route(); }));
    } catch (const KernelError& e) {
        if (ns.name.empty()) throw;
        throw e.prefixed("namespace \"" + ns.name + "\"");
    }
}

Handle Handle::open_here() { return Handle(nl::Socket::open_route()); }

std::vector<Handle> Handle::open_in_each(const std::vector<const netns::NetnsHandle*>& namespaces) {
    std::vector<Handle> handles;
    handles.reserve(namespaces.size());
    netns::run_in_each(namespaces, [&](std::size_t i) {
        try {
            handles.emplace_back(nl::Socket::open_route());
        } catch (const KernelError& e) {
            if (namespaces[i]->name.empty()) throw;
            throw e.prefixed("namespace \"" + namespaces[i]->name + "\"");
        }
    });
    return handles;
}

namespace {

std::optional<IpAddress> address_of(const nlattr* attr, int family) {
    if (!attr) return std::nullopt;
    IpAddress a;
    a.family = family;
    if (mnl_attr_get_payload_len(attr) != a.size()) return std::nullopt;
    std::memcpy(a.bytes.data(), mnl_attr_get_payload(attr), a.size());
    return a;
}

LinkInfo parse_link(const nlmsghdr* nlh) {
    const auto* ifi = static_cast<const ifinfomsg*>(mnl_nlmsg_get_payload(nlh));
    LinkInfo l;
    l.ifindex = ifi->ifi_index;
    l.flags = ifi->ifi_flags;
    l.type = ifi->ifi_type;
    auto tb = nl::parse_attrs(nlh, sizeof(ifinfomsg), IFLA_MAX);
    if (tb[IFLA_IFNAME] && mnl_attr_validate(tb[IFLA_IFNAME], MNL_TYPE_NUL_STRING) == 0)
        l.name = mnl_attr_get_str(tb[IFLA_IFNAME]);
    if (tb[IFLA_MTU] && mnl_attr_validate(tb[IFLA_MTU], MNL_TYPE_U32) == 0) l.mtu = mnl_attr_get_u32(tb[IFLA_MTU]);
    if (tb[IFLA_OPERSTATE] && mnl_attr_validate(tb[IFLA_OPERSTATE], MNL_TYPE_U8) == 0)
        l.operstate = mnl_attr_get_u8(tb[IFLA_OPERSTATE]);
    if (tb[IFLA_MASTER] && mnl_attr_validate(tb[IFLA_MASTER], MNL_TYPE_U32) == 0)
        l.master = static_cast<int>(mnl_attr_get_u32(tb[IFLA_MASTER]));
    if (tb[IFLA_ADDRESS] && mnl_attr_get_payload_len(tb[IFLA_ADDRESS]) == l.mac.size())
        std::memcpy(l.mac.data(), mnl_attr_get_payload(tb[IFLA_ADDRESS]), l.mac.size());
    if (tb[IFLA_LINKINFO]) {
        auto info = nl::parse_nested(tb[IFLA_LINKINFO], IFLA_INFO_MAX);
        if (info[IFLA_INFO_KIND] && mnl_attr_validate(info[IFLA_INFO_KIND], MNL_TYPE_STRING) == 0)
            l.kind.assign(static_cast<const char*>(mnl_attr_get_payload(info[IFLA_INFO_KIND])),
                          strnlen(static_cast<const char*>(mnl_attr_get_payload(info[IFLA_INFO_KIND])),
                                  mnl_attr_get_payload_len(info[IFLA_INFO_KIND])));
        // The tun driver names TAP devices "tun" too; IFLA_TUN_TYPE tells them apart.
        if (l.kind == "tun" && info[IFLA_INFO_DATA]) {
            auto data = nl::parse_nested(info[IFLA_INFO_DATA], IFLA_TUN_MAX);
            if (data[IFLA_TUN_TYPE] && mnl_attr_validate(data[IFLA_TUN_TYPE], MNL_TYPE_U8) == 0 &&
                mnl_attr_get_u8(data[IFLA_TUN_TYPE]) == IFF_TAP)
                l.kind = "tap";
        }
    }
    return l;
}

nl::Message get_links() {
    nl::Message m(RTM_GETLINK, 0);
    m.header<ifinfomsg>().ifi_family = AF_UNSPEC;
    // Counters are the bulk of a link dump and nobody here reads them.
    m.put_u32(IFLA_EXT_MASK, RTEXT_FILTER_SKIP_STATS);
    return m;
}

}  // namespace

std::vector<LinkInfo> link_dump(Handle& h) {
    std::vector<LinkInfo> out;
    nl::Message m = get_links();
    nl::dump(
        h.socket(), m,
        [&](const nlmsghdr* nlh) {
            if (nlh->nlmsg_type == RTM_NEWLINK) out.push_back(parse_link(nlh));
        },
        "listing links");
    return out;
}

std::optional<LinkInfo> link_get(Handle& h, const std::string& name) {
    check_ifname(name);
    nl::Message m(RTM_GETLINK, 0);
    m.header<ifinfomsg>().ifi_family = AF_UNSPEC;
    m.put_strz(IFLA_IFNAME, name);
    m.put_u32(IFLA_EXT_MASK, RTEXT_FILTER_SKIP_STATS);
    std::optional<LinkInfo> found;
    try {
        nl::query(
            h.socket(), m,
            [&](const nlmsghdr* nlh) {
                if (nlh->nlmsg_type == RTM_NEWLINK) found = parse_link(nlh);
            },
            "looking up interface " + name);
    } catch (const KernelError& e) {
        if (e.errno_value() != ENODEV) throw;
    }
    return found;
}

int ifindex_of(Handle& h, const std::string& name) {
    check_ifname(name);
    nl::Message m(RTM_GETLINK, 0);
    m.header<ifinfomsg>().ifi_family = AF_UNSPEC;
    m.put_strz(IFLA_IFNAME, name);
    m.put_u32(IFLA_EXT_MASK, RTEXT_FILTER_SKIP_STATS);
    int index = 0;
    nl::query(
        h.socket(), m,
        [&](const nlmsghdr* nlh) {
            if (nlh->nlmsg_type == RTM_NEWLINK) index = parse_link(nlh).ifindex;
        },
        "looking up interface " + name);
    if (!index) throw KernelError(ENODEV, "looking up interface " + name);
    return index;
}

std::vector<AddrInfo> addr_dump(Handle& h) {
    std::vector<AddrInfo> out;
    nl::Message m(RTM_GETADDR, 0);
    m.header<ifaddrmsg>().ifa_family = AF_UNSPEC;
    nl::dump(
        h.socket(), m,
        [&](const nlmsghdr* nlh) {
            if (nlh->nlmsg_type != RTM_NEWADDR) return;
            const auto* ifa = static_cast<const ifaddrmsg*>(mnl_nlmsg_get_payload(nlh));
            auto tb = nl::parse_attrs(nlh, sizeof(ifaddrmsg), IFA_MAX);
            // IFA_LOCAL is the interface's own address; IFA_ADDRESS is the peer's on
            // point-to-point links and equal to IFA_LOCAL otherwise (IPv6 has only IFA_ADDRESS).
            auto a = address_of(tb[IFA_LOCAL] ? tb[IFA_LOCAL] : tb[IFA_ADDRESS], ifa->ifa_family);
            if (!a) return;
            AddrInfo info;
            info.ifindex = static_cast<int>(ifa->ifa_index);
            info.prefix = IpPrefix{*a, ifa->ifa_prefixlen};
            info.flags = ifa->ifa_flags;
            if (tb[IFA_FLAGS] && mnl_attr_validate(tb[IFA_FLAGS], MNL_TYPE_U32) == 0)
                info.flags = mnl_attr_get_u32(tb[IFA_FLAGS]);
            info.scope = ifa->ifa_scope;
            out.push_back(info);
        },
        "listing addresses");
    return out;
}

std::size_t neigh_flush(Handle& h) {
    struct Entry {
        unsigned char family;
        int ifindex;
        std::vector<unsigned char> dst;
    };
    std::vector<Entry> entries;
    nl::Message m(RTM_GETNEIGH, 0);
    m.header<ndmsg>().ndm_family = AF_UNSPEC;
    nl::dump(
        h.socket(), m,
        [&](const nlmsghdr* nlh) {
            if (nlh->nlmsg_type != RTM_NEWNEIGH) return;
            const auto* nd = static_cast<const ndmsg*>(mnl_nlmsg_get_payload(nlh));
            if ((nd->ndm_family != AF_INET && nd->ndm_family != AF_INET6) ||
                (nd->ndm_state & (NUD_PERMANENT | NUD_NOARP)))
                return;
            auto tb = nl::parse_attrs(nlh, sizeof(ndmsg), NDA_MAX);
            if (!tb[NDA_DST]) return;
            const auto* data = static_cast<const unsigned char*>(mnl_attr_get_payload(tb[NDA_DST]));
            entries.push_back({nd->ndm_family, nd->ndm_ifindex,
                               std::vector<unsigned char>(data, data + mnl_attr_get_payload_len(tb[NDA_DST]))});
        },
        "listing neighbour entries");
    nl::Batch b;
    for (const auto& e : entries) {
        nl::Message d(RTM_DELNEIGH, 0);
        auto& nd = d.header<ndmsg>();
        nd.ndm_family = e.family;
        nd.ndm_ifindex = e.ifindex;
        d.put_bytes(NDA_DST, e.dst.data(), e.dst.size());
        b.add(std::move(d), "flushing neighbour entries");
    }
    std::size_t deleted = 0;
    for (const auto& r : b.run(h.socket())) {
        if (r.error == 0) ++deleted;
        else if (r.error != ENOENT) throw KernelError(r.error, r.context, r.kernel_message);  // ENOENT: gone meanwhile
    }
    return deleted;
}

std::vector<RouteInfo> route_dump(Handle& h) {
    std::vector<RouteInfo> out;
    for (int family : {AF_INET, AF_INET6}) {
        nl::Message m(RTM_GETROUTE, 0);
        m.header<rtmsg>().rtm_family = static_cast<unsigned char>(family);
        nl::dump(
            h.socket(), m,
            [&](const nlmsghdr* nlh) {
                if (nlh->nlmsg_type != RTM_NEWROUTE) return;
                const auto* rtm = static_cast<const rtmsg*>(mnl_nlmsg_get_payload(nlh));
                auto tb = nl::parse_attrs(nlh, sizeof(rtmsg), RTA_MAX);
                RouteInfo r;
                r.family = rtm->rtm_family;
                if (auto dst = address_of(tb[RTA_DST], r.family)) r.dst = IpPrefix{*dst, rtm->rtm_dst_len};
                r.gateway = address_of(tb[RTA_GATEWAY], r.family);
                if (tb[RTA_OIF]) r.oif = static_cast<int>(mnl_attr_get_u32(tb[RTA_OIF]));
                r.table = tb[RTA_TABLE] ? mnl_attr_get_u32(tb[RTA_TABLE]) : rtm->rtm_table;
                if (tb[RTA_PRIORITY]) r.metric = mnl_attr_get_u32(tb[RTA_PRIORITY]);
                r.protocol = rtm->rtm_protocol;
                r.scope = rtm->rtm_scope;
                r.type = rtm->rtm_type;
                out.push_back(std::move(r));
            },
            "listing routes");
    }
    return out;
}

namespace {

void set_link_group(Handle& h, bool join) {
    const int group = RTNLGRP_LINK;
    if (::setsockopt(h.socket().fd(), SOL_NETLINK, join ? NETLINK_ADD_MEMBERSHIP : NETLINK_DROP_MEMBERSHIP, &group,
                     sizeof group) != 0 &&
        join)
        throw_last_errno("subscribing to link notifications");
}

// What one namespace still waits for; `left` counts the entries of `want` not yet up.
struct Pending {
    std::unordered_set<int> want;
    std::size_t left() const { return want.size(); }
};

void mark_up(Pending& p, const LinkInfo& l) {
    if (l.operstate == kOperUp) p.want.erase(l.ifindex);
}

}  // namespace

std::vector<std::vector<int>> wait_operstate_up_many(const std::vector<OperstateWait>& waits,
                                                     std::chrono::milliseconds timeout) {
    using Clock = std::chrono::steady_clock;
    const auto deadline = Clock::now() + timeout;
    std::vector<Pending> pending(waits.size());
    std::vector<bool> joined(waits.size(), false);
    UniqueFd ep(::epoll_create1(EPOLL_CLOEXEC));
    if (!ep) throw_last_errno("epoll_create1");
    auto leave_all = [&] {
        for (std::size_t i = 0; i < waits.size(); ++i)
            if (joined[i]) set_link_group(*waits[i].handle, false);
    };
    // A namespace whose links are all up leaves the group at once: every link
    // notification on the host walks all sockets subscribed to it, in every namespace
    // (netlink_broadcast), so thousands kept subscribed made each one O(N).
    auto done = [&](std::size_t i) {
        set_link_group(*waits[i].handle, false);
        joined[i] = false;
    };
    auto redump = [&](std::size_t i) {
        for (const auto& l : link_dump(*waits[i].handle)) mark_up(pending[i], l);
    };
    std::size_t open = 0;
    try {
        for (std::size_t i = 0; i < waits.size(); ++i) {
            if (waits[i].ifindexes.empty()) continue;
            pending[i].want.insert(waits[i].ifindexes.begin(), waits[i].ifindexes.end());
            // Subscribed before the dump: no transition falls between the two.
            set_link_group(*waits[i].handle, true);
            joined[i] = true;
            redump(i);
            if (pending[i].left() == 0) {
                done(i);
                continue;
            }
            epoll_event ev{};
            ev.events = EPOLLIN;
            ev.data.u64 = i;
            if (::epoll_ctl(ep.get(), EPOLL_CTL_ADD, waits[i].handle->socket().fd(), &ev) != 0)
                throw_last_errno("epoll_ctl");
            ++open;
        }
        std::vector<std::uint8_t> buf(64 * 1024);
        std::vector<epoll_event> events(64);
        while (open > 0) {
            const auto now = Clock::now();
            if (now >= deadline) break;
            const auto left_ms = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - now).count() + 1;
            const int wait_ms = static_cast<int>(std::min<long long>(left_ms, 100));
            const int n = ::epoll_wait(ep.get(), events.data(), static_cast<int>(events.size()), wait_ms);
            if (n < 0) {
                if (errno == EINTR) continue;
                throw_last_errno("epoll_wait");
            }
            if (n == 0) {
                // Quiet for 100 ms: a notification may have been read by a dump and
                // dropped there; look again at every namespace still waiting.
                for (std::size_t i = 0; i < waits.size(); ++i)
                    if (joined[i] && pending[i].left() > 0) {
                        redump(i);
                        if (pending[i].left() == 0) {
                            ::epoll_ctl(ep.get(), EPOLL_CTL_DEL, waits[i].handle->socket().fd(), nullptr);
                            done(i);
                            --open;
                        }
                    }
                continue;
            }
            for (int e = 0; e < n; ++e) {
                const std::size_t i = events[static_cast<std::size_t>(e)].data.u64;
                const int fd = waits[i].handle->socket().fd();
                bool lost = false;
                for (;;) {
                    const ssize_t got = ::recv(fd, buf.data(), buf.size(), MSG_DONTWAIT);
                    if (got < 0) {
                        if (errno == EINTR) continue;
                        if (errno == ENOBUFS) {
                            lost = true;
                            continue;
                        }
                        if (errno == EAGAIN || errno == EWOULDBLOCK) break;
                        throw_last_errno("reading link notifications");
                    }
                    int len = static_cast<int>(got);
                    for (auto* nlh = reinterpret_cast<const nlmsghdr*>(buf.data()); mnl_nlmsg_ok(nlh, len);
                         nlh = mnl_nlmsg_next(nlh, &len))
                        if (nlh->nlmsg_type == RTM_NEWLINK) mark_up(pending[i], parse_link(nlh));
                }
                if (lost) redump(i);
                if (pending[i].left() == 0) {
                    ::epoll_ctl(ep.get(), EPOLL_CTL_DEL, fd, nullptr);
                    done(i);
                    --open;
                }
            }
        }
    } catch (...) {
        leave_all();
        throw;
    }
    leave_all();
    std::vector<std::vector<int>> out(waits.size());
    for (std::size_t i = 0; i < waits.size(); ++i)
        for (int x : waits[i].ifindexes)
            if (pending[i].want.count(x)) out[i].push_back(x);
    return out;
}

void wait_operstate_up(Handle& h, const std::vector<int>& ifindexes, std::chrono::milliseconds timeout) {
    auto left = wait_operstate_up_many({OperstateWait{&h, ifindexes}}, timeout).at(0);
    if (left.empty()) return;
    // Name them: the handle's namespace knows their names (the index only if it does not).
    std::vector<LinkInfo> links;
    try {
        links = link_dump(h);
    } catch (const KernelError&) {}
    std::string list;
    for (int i : left) {
        std::string name = "ifindex " + std::to_string(i);
        for (const auto& link : links)
            if (link.ifindex == i) name = link.name;
        list += (list.empty() ? "" : ", ") + name;
    }
    throw KernelError(ETIMEDOUT, "waiting for links to come up",
                      "still not operationally up after " + std::to_string(timeout.count()) + " ms: " + list);
}

}  // namespace labctl::rtnl
