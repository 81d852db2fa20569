// Per-namespace handles and dumps.
#include <net/if.h>
#include <netinet/in.h>

#include <libmnl/libmnl.h>
#include <linux/if_addr.h>
#include <linux/if_link.h>
#include <linux/rtnetlink.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <thread>

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
    nl::dump(h.socket(), m, [&](const nlmsghdr* nlh) {
        if (nlh->nlmsg_type == RTM_NEWLINK) out.push_back(parse_link(nlh));
    }, "listing links");
    return out;
}

int ifindex_of(Handle& h, const std::string& name) {
    check_ifname(name);
    nl::Message m(RTM_GETLINK, 0);
    m.header<ifinfomsg>().ifi_family = AF_UNSPEC;
    m.put_strz(IFLA_IFNAME, name);
    m.put_u32(IFLA_EXT_MASK, RTEXT_FILTER_SKIP_STATS);
    int index = 0;
    nl::query(h.socket(), m, [&](const nlmsghdr* nlh) {
        if (nlh->nlmsg_type == RTM_NEWLINK) index = parse_link(nlh).ifindex;
    }, "looking up interface " + name);
    if (!index) throw KernelError(ENODEV, "looking up interface " + name);
    return index;
}

std::vector<AddrInfo> addr_dump(Handle& h) {
    std::vector<AddrInfo> out;
    nl::Message m(RTM_GETADDR, 0);
    m.header<ifaddrmsg>().ifa_family = AF_UNSPEC;
    nl::dump(h.socket(), m, [&](const nlmsghdr* nlh) {
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
    }, "listing addresses");
    return out;
}

std::vector<RouteInfo> route_dump(Handle& h) {
    std::vector<RouteInfo> out;
    for (int family : {AF_INET, AF_INET6}) {
        nl::Message m(RTM_GETROUTE, 0);
        m.header<rtmsg>().rtm_family = static_cast<unsigned char>(family);
        nl::dump(h.socket(), m, [&](const nlmsghdr* nlh) {
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
        }, "listing routes");
    }
    return out;
}

void wait_operstate_up(Handle& h, const std::vector<int>& ifindexes, std::chrono::milliseconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    auto pause = std::chrono::milliseconds(1);
    for (;;) {
        std::vector<int> waiting = ifindexes;
        for (const auto& l : link_dump(h))
            if (l.operstate == kOperUp) std::erase(waiting, l.ifindex);
        if (waiting.empty()) return;
        if (std::chrono::steady_clock::now() >= deadline) {
            std::string list;
            for (int i : waiting) list += (list.empty() ? "" : ", ") + std::to_string(i);
            throw KernelError(ETIMEDOUT, "waiting for links to come up",
                              "still not operationally up after " + std::to_string(timeout.count()) +
                                  " ms: ifindex " + list);
        }
        std::this_thread::sleep_for(pause);
        pause = std::min(pause * 2, std::chrono::milliseconds(50));
    }
}

}  // namespace labctl::rtnl
