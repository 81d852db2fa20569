// Link, address, route and bridge-VLAN request builders.
#include <net/if.h>
#include <netinet/in.h>

#include <linux/if_bridge.h>
#include <linux/if_link.h>
#include <linux/rtnetlink.h>
#include <linux/veth.h>

#include <stdexcept>

#include "rtnl/rtnl.hpp"

namespace labctl::rtnl {

namespace {

void put_common(nl::Message& m, const LinkCommon& link) {
    m.put_strz(IFLA_IFNAME, link.name);
    if (link.mac) m.put_bytes(IFLA_ADDRESS, link.mac->data(), link.mac->size());
    if (link.mtu) m.put_u32(IFLA_MTU, *link.mtu);
}

// RTM_NEWLINK creating `link`: ifinfomsg with the chosen index and IFF_UP, and the
// attributes every kind shares. The caller adds IFLA_LINKINFO.
nl::Message new_link(const LinkCommon& link) {
    check_ifname(link.name);
    nl::Message m(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL);
    auto& ifi = m.header<ifinfomsg>();
    ifi.ifi_family = AF_UNSPEC;
    ifi.ifi_index = link.ifindex;
    if (link.up) {
        ifi.ifi_flags = IFF_UP;
        ifi.ifi_change = IFF_UP;
    }
    put_common(m, link);
    if (link.master_ifindex) m.put_u32(IFLA_MASTER, static_cast<std::uint32_t>(link.master_ifindex));
    return m;
}

void check_vid(std::uint16_t vid) {
    if (vid < 1 || vid > 4094) throw std::invalid_argument("VLAN id " + std::to_string(vid) + " is not in 1..4094");
}

nl::Message bridge_vlan(std::uint16_t type, int port_ifindex, std::uint16_t vid, std::uint16_t flags, bool self) {
    check_vid(vid);
    nl::Message m(type, 0);
    auto& ifi = m.header<ifinfomsg>();
    ifi.ifi_family = AF_BRIDGE;
    ifi.ifi_index = port_ifindex;
    auto spec = m.nest(IFLA_AF_SPEC);
    // Without IFLA_BRIDGE_FLAGS the kernel applies it to the port's master (the bridge's
    // view of the port), which is what `bridge vlan add dev PORT` does by default.
    if (self) m.put_u16(IFLA_BRIDGE_FLAGS, BRIDGE_FLAGS_SELF);
    bridge_vlan_info info{};
    info.flags = flags;
    info.vid = vid;
    m.put_bytes(IFLA_BRIDGE_VLAN_INFO, &info, sizeof info);
    spec.end();
    return m;
}

nl::Message addr_msg(std::uint16_t type, std::uint16_t flags, int ifindex, const IpPrefix& prefix) {
    if (prefix.address.family != AF_INET && prefix.address.family != AF_INET6)
        throw std::invalid_argument("address without a family");
    if (prefix.length < 0 || prefix.length > prefix.address.max_prefix())
        throw std::invalid_argument("prefix length " + std::to_string(prefix.length) + " out of range");
    nl::Message m(type, flags);
    auto& ifa = m.header<ifaddrmsg>();
    ifa.ifa_family = static_cast<unsigned char>(prefix.address.family);
    ifa.ifa_prefixlen = static_cast<unsigned char>(prefix.length);
    ifa.ifa_index = static_cast<unsigned>(ifindex);
    // ip's default_scope(): 127.0.0.0/8 is host scope, everything else universe.
    if (prefix.address.family == AF_INET && prefix.address.bytes[0] == 127) ifa.ifa_scope = RT_SCOPE_HOST;
    m.put_bytes(IFA_LOCAL, prefix.address.bytes.data(), prefix.address.size());
    m.put_bytes(IFA_ADDRESS, prefix.address.bytes.data(), prefix.address.size());
    return m;
}

nl::Message route_msg(std::uint16_t type, std::uint16_t flags, const RouteSpec& r) {
    int family = r.family;
    if (!family) family = r.dst ? r.dst->address.family : r.via ? r.via->family : 0;
    if (family != AF_INET && family != AF_INET6) throw std::invalid_argument("route without a family");
    if ((r.dst && r.dst->address.family != family) || (r.via && r.via->family != family))
        throw std::invalid_argument("route mixes address families");
    if (type == RTM_NEWROUTE && !r.via && !r.oif)
        throw std::invalid_argument("route needs a gateway or an output interface");
    nl::Message m(type, flags);
    auto& rtm = m.header<rtmsg>();
    rtm.rtm_family = static_cast<unsigned char>(family);
    rtm.rtm_dst_len = static_cast<unsigned char>(r.dst ? r.dst->length : 0);
    rtm.rtm_table = RT_TABLE_MAIN;
    if (type == RTM_DELROUTE) {
        // As ip route del: protocol and type 0 and scope NOWHERE match any route.
        rtm.rtm_scope = RT_SCOPE_NOWHERE;
    } else {
        rtm.rtm_protocol = RTPROT_BOOT;
        rtm.rtm_type = RTN_UNICAST;
        // As ip route add: without a gateway the destination is on the link.
        rtm.rtm_scope = r.via ? RT_SCOPE_UNIVERSE : RT_SCOPE_LINK;
    }
    if (r.dst && r.dst->length > 0) m.put_bytes(RTA_DST, r.dst->address.bytes.data(), r.dst->address.size());
    if (r.via) m.put_bytes(RTA_GATEWAY, r.via->bytes.data(), r.via->size());
    if (r.oif) m.put_u32(RTA_OIF, static_cast<std::uint32_t>(r.oif));
    if (r.metric) m.put_u32(RTA_PRIORITY, *r.metric);
    return m;
}

// One TX and one RX queue, as a veth ends up with anyway: without these the kernel
// allocates one queue per CPU and then cuts the real count to one, waiting for an RCU
// grace period under RTNL for each end (netif_set_real_num_tx_queues): 500 pairs took
// 0.46-0.55 s that way against 0.18-0.23 s with them (bench/observations.md).
void put_one_queue(nl::Message& m) {
    m.put_u32(IFLA_NUM_TX_QUEUES, 1);
    m.put_u32(IFLA_NUM_RX_QUEUES, 1);
}

}  // namespace

void check_ifname(const std::string& name) {
    if (name.empty() || name.size() >= IFNAMSIZ || name == "." || name == "..")
        throw std::invalid_argument("invalid interface name \"" + name + "\"");
    for (char c : name) {
        if (c == '/' || c == ':' || c == '%' || c == '\0' || c == ' ' || (c >= '\t' && c <= '\r'))
            throw std::invalid_argument("invalid interface name \"" + name + "\"");
    }
}

nl::Message veth_add(const VethSpec& spec) {
    if (spec.b.up) throw std::invalid_argument("veth peer " + spec.b.name + " cannot be created up");
    if (spec.b.master_ifindex) throw std::invalid_argument("veth peer " + spec.b.name + " cannot be created enslaved");
    check_ifname(spec.b.name);
    nl::Message m = new_link(spec.a);
    put_one_queue(m);
    if (spec.a_netns_fd >= 0) m.put_u32(IFLA_NET_NS_FD, static_cast<std::uint32_t>(spec.a_netns_fd));
    auto linkinfo = m.nest(IFLA_LINKINFO);
    m.put_strz(IFLA_INFO_KIND, "veth");
    auto data = m.nest(IFLA_INFO_DATA);
    // VETH_INFO_PEER holds a whole ifinfomsg followed by the peer's own IFLA_* attributes.
    auto peer = m.nest_plain(VETH_INFO_PEER);
    ifinfomsg pifi{};
    pifi.ifi_family = AF_UNSPEC;
    pifi.ifi_index = spec.b.ifindex;
    m.put_raw(&pifi, sizeof pifi);
    put_common(m, spec.b);
    put_one_queue(m);
    if (spec.b_netns_fd >= 0) m.put_u32(IFLA_NET_NS_FD, static_cast<std::uint32_t>(spec.b_netns_fd));
    peer.end();
    data.end();
    linkinfo.end();
    return m;
}

nl::Message bridge_add(const LinkCommon& link, bool vlan_filtering, bool multicast_snooping) {
    nl::Message m = new_link(link);
    auto linkinfo = m.nest(IFLA_LINKINFO);
    m.put_strz(IFLA_INFO_KIND, "bridge");
    auto data = m.nest(IFLA_INFO_DATA);
    m.put_u32(IFLA_BR_STP_STATE, 0);
    m.put_u32(IFLA_BR_FORWARD_DELAY, 0);
    if (vlan_filtering) m.put_u8(IFLA_BR_VLAN_FILTERING, 1);
    if (!multicast_snooping) m.put_u8(IFLA_BR_MCAST_SNOOPING, 0);
    data.end();
    linkinfo.end();
    return m;
}

nl::Message bridge_set_multicast_snooping(int ifindex, bool on) {
    nl::Message m(RTM_NEWLINK, 0);
    m.header<ifinfomsg>().ifi_index = ifindex;
    auto linkinfo = m.nest(IFLA_LINKINFO);
    m.put_strz(IFLA_INFO_KIND, "bridge");
    auto data = m.nest(IFLA_INFO_DATA);
    m.put_u8(IFLA_BR_MCAST_SNOOPING, on ? 1 : 0);
    data.end();
    linkinfo.end();
    return m;
}

nl::Message dummy_add(const LinkCommon& link) {
    nl::Message m = new_link(link);
    auto linkinfo = m.nest(IFLA_LINKINFO);
    m.put_strz(IFLA_INFO_KIND, "dummy");
    linkinfo.end();
    return m;
}

nl::Message vlan_add(const LinkCommon& link, int parent_ifindex, std::uint16_t id) {
    check_vid(id);
    nl::Message m = new_link(link);
    m.put_u32(IFLA_LINK, static_cast<std::uint32_t>(parent_ifindex));
    auto linkinfo = m.nest(IFLA_LINKINFO);
    m.put_strz(IFLA_INFO_KIND, "vlan");
    auto data = m.nest(IFLA_INFO_DATA);
    m.put_u16(IFLA_VLAN_ID, id);
    data.end();
    linkinfo.end();
    return m;
}

nl::Message link_set(int ifindex, const LinkChange& change) {
    if (change.name) check_ifname(*change.name);
    nl::Message m(RTM_NEWLINK, 0);
    auto& ifi = m.header<ifinfomsg>();
    ifi.ifi_family = AF_UNSPEC;
    ifi.ifi_index = ifindex;
    if (change.up) {
        ifi.ifi_change = IFF_UP;
        ifi.ifi_flags = *change.up ? IFF_UP : 0;
    }
    if (change.name) m.put_strz(IFLA_IFNAME, *change.name);
    if (change.mac) m.put_bytes(IFLA_ADDRESS, change.mac->data(), change.mac->size());
    if (change.mtu) m.put_u32(IFLA_MTU, *change.mtu);
    if (change.master_ifindex) m.put_u32(IFLA_MASTER, static_cast<std::uint32_t>(*change.master_ifindex));
    if (change.netns_fd) m.put_u32(IFLA_NET_NS_FD, static_cast<std::uint32_t>(*change.netns_fd));
    return m;
}

nl::Message link_del(int ifindex) {
    nl::Message m(RTM_DELLINK, 0);
    auto& ifi = m.header<ifinfomsg>();
    ifi.ifi_family = AF_UNSPEC;
    ifi.ifi_index = ifindex;
    return m;
}

nl::Message bridge_vlan_add(int port_ifindex, std::uint16_t vid, bool pvid, bool untagged, bool self) {
    std::uint16_t flags = 0;
    if (pvid) flags |= BRIDGE_VLAN_INFO_PVID;
    if (untagged) flags |= BRIDGE_VLAN_INFO_UNTAGGED;
    return bridge_vlan(RTM_SETLINK, port_ifindex, vid, flags, self);
}

nl::Message bridge_vlan_del(int port_ifindex, std::uint16_t vid, bool self) {
    return bridge_vlan(RTM_DELLINK, port_ifindex, vid, 0, self);
}

nl::Message addr_add(int ifindex, const IpPrefix& prefix, bool nodad) {
    nl::Message m = addr_msg(RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, ifindex, prefix);
    if (prefix.address.family == AF_INET && prefix.length <= 30) {
        const IpAddress brd = prefix.broadcast();
        m.put_bytes(IFA_BROADCAST, brd.bytes.data(), 4);
    }
    if (nodad && prefix.address.family == AF_INET6) m.put_u32(IFA_FLAGS, IFA_F_NODAD);
    return m;
}

nl::Message addr_del(int ifindex, const IpPrefix& prefix) { return addr_msg(RTM_DELADDR, 0, ifindex, prefix); }

nl::Message route_add(const RouteSpec& route) { return route_msg(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL, route); }

nl::Message route_del(const RouteSpec& route) { return route_msg(RTM_DELROUTE, 0, route); }

}  // namespace labctl::rtnl
