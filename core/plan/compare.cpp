#include "plan/builder.hpp"

#include <cstdio>

namespace labctl::plan::detail {

std::string num(double v) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%g", v);
    return buf;
}

bool is_port(const Node& node, const Interface& iface) {
    return iface.master.has_value() && node.interfaces[*iface.master].type == InterfaceType::bridge;
}

bool is_link_end(const Interface& iface) { return iface.type == InterfaceType::veth && iface.link.has_value(); }

// What the plan can change only by making an interface again.
std::string iface_shape(const Node& node, const Interface& i) {
    std::string s = i.name + "|" + to_string(i.type);
    if (i.mac) s += "|mac " + mac_to_string(*i.mac);
    if (i.owner) s += "|owner " + std::to_string(*i.owner);
    if (i.group) s += "|group " + std::to_string(*i.group);
    if (i.type == InterfaceType::vlan) s += "|vlan " + node.interfaces[i.parent].name + "." + std::to_string(i.vlan_id);
    if (i.master) s += "|master " + node.interfaces[*i.master].name;
    if (i.pvid) s += "|pvid " + std::to_string(*i.pvid);
    for (auto v : i.tagged) s += "|tagged " + std::to_string(v);
    return s;
}

// What the plan can change only by making the node again: its kind and every interface
// that is not a link end (those belong to their links).
std::string node_shape(const Node& n) {
    std::string s = std::string(to_string(n.kind)) + (n.vlan_filtering ? "|vlan_filtering" : "");
    for (const auto& i : n.interfaces)
        if (!is_link_end(i)) s += ";" + iface_shape(n, i);
    return s;
}

std::string link_shape(const Topology& t, const Link& l) {
    return iface_shape(t.nodes[l.ends[0].node], t.interface(l.ends[0])) + "<->" +
        iface_shape(t.nodes[l.ends[1].node], t.interface(l.ends[1]));
}

// "impair delay_ms 10 -> 50 loss_pct none -> 5"
std::string impair_diff(const Impairment& from, const Impairment& to) {
    std::string s = "impair";
    auto field = [&](const char* name, const std::optional<double>& a, const std::optional<double>& b) {
        if (a == b) return;
        s += std::string(" ") + name + " " + (a ? num(*a) : "none") + " -> " + (b ? num(*b) : "none");
    };
    field("delay_ms", from.delay_ms, to.delay_ms);
    field("jitter_ms", from.jitter_ms, to.jitter_ms);
    field("loss_pct", from.loss_pct, to.loss_pct);
    field("rate_mbit", from.rate_mbit, to.rate_mbit);
    field("duplicate_pct", from.duplicate_pct, to.duplicate_pct);
    field("reorder_pct", from.reorder_pct, to.reorder_pct);
    return s;
}

Impairment impair_in_force(const std::string& key, const Link& l, const Runtime& rt) {
    if (rt.impaired.empty()) return l.impair;
    auto it = rt.impaired.find(key);
    return it == rt.impaired.end() ? l.impair : it->second;
}

// Addresses the kernel gives every namespace's lo itself: never removed by a plan.
bool kernel_default_address(const Interface& iface, const IpPrefix& p) {
    if (iface.type != InterfaceType::loopback) return false;
    return p.to_string() == "127.0.0.1/8" || p.to_string() == "::1/128";
}

std::uint32_t default_metric(int family) { return family == AF_INET6 ? 1024 : 0; }

std::string route_text(const RouteSpec& r, const Node* node, const std::vector<int>* ifindex) {
    std::string text = r.dst ? r.dst->to_string() : (r.family == AF_INET6 ? "default (IPv6)" : "default");
    if (r.via) text += " via " + r.via->to_string();
    if (r.oif && node && ifindex) {
        for (std::size_t i = 0; i < ifindex->size(); ++i)
            if ((*ifindex)[i] == r.oif) text += " dev " + node->interfaces[i].name;
    }
    if (r.metric) text += " metric " + std::to_string(*r.metric);
    return text;
}


}  // namespace labctl::plan::detail
