// Semantic validation of links, then resolving interface names written before the
// interfaces existed and filling in the implicit ones (builder.hpp).

#include "topology/builder.hpp"

#include <pwd.h>

#include <algorithm>
#include <map>
#include <regex>
#include <set>
#include <unordered_map>

namespace labctl::topology::detail {

std::optional<LinkEnd> Builder::endpoint(const std::string& text, const std::string& ptr, std::size_t link) {
    auto colon = text.find(':');
    if (colon == std::string::npos) return std::nullopt;  // the schema's pattern said so
    std::string node_name = text.substr(0, colon), ifname = text.substr(colon + 1);
    auto n = find_node(node_name);
    if (!n) {
        error(ptr, "no node " + quote(node_name));
        return std::nullopt;
    }
    if (auto why = ifname_problem(ifname); !why.empty()) {
        error(ptr, why);
        return std::nullopt;
    }
    Node& node = topo_.nodes[*n];
    PendingNode& pend = pending_[*n];
    if (ifname == "lo") {
        error(ptr, "lo is the loopback and cannot be a link end");
        return std::nullopt;
    }
    if (node.kind == NodeKind::switch_ && ifname == "br0") {
        error(ptr, "br0 is the switch's bridge; link ends are its ports (any other name)");
        return std::nullopt;
    }
    auto i = find_iface(pend, ifname);
    if (!i) {
        Interface iface;
        iface.name = ifname;
        i = add_iface(node, pend, std::move(iface));
    }
    Interface& iface = node.interfaces[*i];
    if (iface.type != InterfaceType::veth) {
        error(ptr, text + " is a " + to_string(iface.type) + " interface; only veth interfaces are link ends");
        return std::nullopt;
    }
    if (iface.link) {
        error(ptr, text + " is already an end of links/" + std::to_string(*iface.link));
        return std::nullopt;
    }
    iface.link = link;
    return LinkEnd{*n, *i};
}

void Builder::links(const Json& j) {
    for (std::size_t li = 0; li < j.size(); ++li) {
        const Json& l = j[li];
        std::string ptr = "/links/" + std::to_string(li);
        Link link;
        if (!l.is_object()) continue;
        auto eps = l.find("endpoints");
        if (eps != l.end() && eps->is_array())
            for (const auto& e : *eps)
                if (e.is_string()) {
                    std::string text = e.get<std::string>();
                    if (auto n = find_node(text.substr(0, text.find(':'))); n && text.find(':') != std::string::npos)
                        pending_[*n].named_by_links.insert(text.substr(text.find(':') + 1));
                }
        if (eps == l.end() || !eps->is_array() || eps->size() != 2 || !(*eps)[0].is_string() || !(*eps)[1].is_string())
            continue;  // reported by the schema
        std::string a = (*eps)[0].get<std::string>(), b = (*eps)[1].get<std::string>();
        if (a.substr(0, a.find(':')) == b.substr(0, b.find(':'))) {
            error(ptr + "/endpoints",
                  "both ends are on node " + quote(a.substr(0, a.find(':'))) + "; a link joins two different nodes");
            continue;
        }
        std::size_t index = topo_.links.size();
        auto e0 = endpoint(a, ptr + "/endpoints/0", index);
        auto e1 = endpoint(b, ptr + "/endpoints/1", index);
        if (!e0 || !e1) {
            // keep indexes aligned with the file: record a placeholder
            if (e0) topo_.nodes[e0->node].interfaces[e0->interface].link.reset();
            if (e1) topo_.nodes[e1->node].interfaces[e1->interface].link.reset();
            topo_.links.push_back(link);
            continue;
        }
        link.ends = {*e0, *e1};
        topo_.nodes[e1->node].interfaces[e1->interface].link_end = 1;
        if (auto m = l.find("mtu"); m != l.end() && m->is_number_integer()) {
            link.mtu = m->get<std::uint32_t>();
            for (const auto& e : link.ends) {
                Interface& iface = topo_.nodes[e.node].interfaces[e.interface];
                if (iface.mtu && *iface.mtu != *link.mtu)
                    error(ptr + "/mtu",
                          topo_.end_name(e) + " has mtu " + std::to_string(*iface.mtu) + ", the link " +
                              std::to_string(*link.mtu));
                else iface.mtu = link.mtu;
            }
        }
        if (auto im = l.find("impair"); im != l.end() && im->is_object()) {
            auto num = [&](const char* key) -> std::optional<double> {
                auto it = im->find(key);
                if (it == im->end() || !it->is_number()) return std::nullopt;
                return it->get<double>();
            };
            Impairment& x = link.impair;
            x.delay_ms = num("delay_ms");
            x.jitter_ms = num("jitter_ms");
            x.loss_pct = num("loss_pct");
            x.rate_mbit = num("rate_mbit");
            x.duplicate_pct = num("duplicate_pct");
            x.reorder_pct = num("reorder_pct");
            if (x.jitter_ms && *x.jitter_ms > 0 && !(x.delay_ms && *x.delay_ms > 0))
                error(ptr + "/impair/jitter_ms", "jitter needs a delay_ms to vary around");
            if (x.reorder_pct && *x.reorder_pct > 0 && !(x.delay_ms && *x.delay_ms > 0))
                error(ptr + "/impair/reorder_pct", "reordering needs a delay_ms (reordered packets skip it)");
        }
        topo_.links.push_back(link);
    }
}

std::optional<std::size_t> Builder::resolve(const Node& node, const PendingNode& pend, const RawRef& ref) {
    auto i = find_iface(pend, ref.name);
    if (!i) error(ref.pointer, "node " + node.name + " has no interface " + quote(ref.name));
    return i;
}

void Builder::finish_nodes() {
    for (std::size_t ni = 0; ni < topo_.nodes.size(); ++ni) {
        Node& node = topo_.nodes[ni];
        PendingNode& pend = pending_[ni];
        for (std::size_t i = 0; i < node.interfaces.size(); ++i) {
            const Interface& iface = node.interfaces[i];
            if (iface.declared && iface.type == InterfaceType::veth && !iface.link &&
                !pend.named_by_links.count(iface.name))
                error(pend.iface_pointer[i],
                      iface.name + " is a veth interface in no link; add a link with end " + node.name + ":" +
                          iface.name + ", or give it a type");
            if (iface.mtu && *iface.mtu < 1280 &&
                std::any_of(iface.addresses.begin(), iface.addresses.end(),
                            [](const IpPrefix& p) { return p.address.family == AF_INET6; }))
                error(pend.iface_pointer.count(i) ? pend.iface_pointer[i] + "/mtu" : "/links",
                      "IPv6 needs an MTU of at least 1280 on " + node.name + ":" + iface.name);
        }
        if (!find_iface(pend, "lo")) {
            Interface lo;
            lo.name = "lo";
            lo.type = InterfaceType::loopback;
            add_iface(node, pend, std::move(lo));
        }
        if (node.kind == NodeKind::switch_ && !find_iface(pend, "br0")) {
            Interface br;
            br.name = "br0";
            br.type = InterfaceType::bridge;
            add_iface(node, pend, std::move(br));
        }
        if (node.kind == NodeKind::switch_) {
            std::size_t br = *find_iface(pend, "br0");
            // The kernel numbers bridge ports with 10 bits, 0 reserved (BR_MAX_PORTS).
            std::size_t ports = node.interfaces.size() - 1 - (find_iface(pend, "lo") ? 1 : 0);
            if (ports > kMaxBridgePorts)
                error("/nodes/" + token(node.name),
                      "switch " + node.name + " has " + std::to_string(ports) +
                          " ports; a Linux bridge takes at most " + std::to_string(kMaxBridgePorts) +
                          " (split it into several switches)");
            for (std::size_t i = 0; i < node.interfaces.size(); ++i) {
                Interface& iface = node.interfaces[i];
                if (i != br && iface.type != InterfaceType::loopback) iface.master = br;
            }
        }
        for (const auto& [i, ref] : pend.vlan_parent) {
            auto p = resolve(node, pend, ref);
            if (!p) continue;
            auto t = node.interfaces[*p].type;
            if (*p == i) error(ref.pointer, "a vlan interface cannot be its own parent");
            else if (t == InterfaceType::loopback || t == InterfaceType::tun)
                error(ref.pointer, "a vlan needs an Ethernet parent; " + ref.name + " is " + to_string(t));
            node.interfaces[i].parent = *p;
            for (const auto& [j, other] : pend.vlan_parent)
                if (j < i && other.name == ref.name && node.interfaces[j].vlan_id == node.interfaces[i].vlan_id)
                    error(pend.iface_pointer[i] + "/id",
                          "VLAN " + std::to_string(node.interfaces[i].vlan_id) + " on " + ref.name + " is already " +
                              node.interfaces[j].name);
        }
        for (const auto& [b, refs] : pend.bridge_ports) {
            for (const auto& ref : refs) {
                auto p = resolve(node, pend, ref);
                if (!p) continue;
                Interface& port = node.interfaces[*p];
                if (*p == b) error(ref.pointer, "a bridge cannot be its own port");
                else if (port.type == InterfaceType::loopback || port.type == InterfaceType::tun ||
                         port.type == InterfaceType::bridge)
                    error(ref.pointer, ref.name + " is " + to_string(port.type) + " and cannot be a bridge port");
                else if (port.master)
                    error(ref.pointer, ref.name + " is already a port of " + node.interfaces[*port.master].name);
                else {
                    port.master = b;
                    node.interfaces[b].ports.push_back(*p);
                }
            }
        }
        for (std::size_t r = 0; r < node.routes.size(); ++r) {
            if (!pend.route_dev[r]) continue;
            node.routes[r].dev = resolve(node, pend, *pend.route_dev[r]);
        }
    }
}

}  // namespace labctl::topology::detail
