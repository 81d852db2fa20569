// Semantic validation of nodes: kind, interfaces, routes, sysctls, commands; then the
// addresses and gateways of every node once all interfaces are known (builder.hpp).

#include "topology/builder.hpp"

#include <pwd.h>

#include <algorithm>
#include <map>
#include <regex>
#include <set>
#include <unordered_map>

namespace labctl::topology::detail {

void Builder::nodes(const Json& j) {
    for (const auto& [name, value] : j.items()) {
        std::string ptr = "/nodes/" + token(name);
        Node node;
        node.name = name;
        node.netns = topo_.name + "-" + name;
        if (!valid_node_name(name)) error(ptr, "invalid node name " + quote(name));
        pending_.emplace_back();
        node_index_.emplace(name, topo_.nodes.size());
        if (value.is_object()) node_body(node, pending_.back(), value, ptr);
        topo_.nodes.push_back(std::move(node));
    }
}

void Builder::node_body(Node& node, PendingNode& pend, const Json& j, const std::string& ptr) {
    if (auto it = j.find("kind"); it != j.end() && it->is_string()) {
        std::string k = it->get<std::string>();
        node.kind = k == "router" ? NodeKind::router : k == "switch" ? NodeKind::switch_ : NodeKind::host;
    }
    if (auto it = j.find("vlan_filtering"); it != j.end() && it->is_boolean()) {
        node.vlan_filtering = it->get<bool>();
        if (node.vlan_filtering && node.kind != NodeKind::switch_)
            error(ptr + "/vlan_filtering", "only a switch takes vlan_filtering");
    }
    if (auto it = j.find("interfaces"); it != j.end() && it->is_object())
        for (const auto& [name, value] : it->items())
            interface(node, pend, name, value, ptr + "/interfaces/" + token(name));
    if (auto it = j.find("routes"); it != j.end() && it->is_array())
        for (std::size_t i = 0; i < it->size(); ++i) route(node, pend, (*it)[i], ptr + "/routes/" + std::to_string(i));
    if (auto it = j.find("sysctls"); it != j.end() && it->is_object())
        for (const auto& [key, value] : it->items()) {
            std::string p = ptr + "/sysctls/" + token(key);
            if (key.find("..") != std::string::npos || key.back() == '.' || key.compare(0, 4, "net.") != 0)
                error(p, "sysctl keys must be under net. (e.g. net.ipv4.ip_forward)");
            // A '/' stands for a '.' inside one component (an interface name such as
            // eth0.10), as with sysctl(8); `up` refuses a component that becomes "."
            // or "..", so does this.
            else if (!sysctl_components_ok(key))
                error(p,
                      "a '/' in a sysctl key stands for a '.' inside a name (net.ipv4.conf.eth0/10.rp_filter); "
                      "no component may be only '/' or '//'");
            if (value.is_string()) {
                std::string v = value.get<std::string>();
                if (v.find('\n') != std::string::npos || v.find('\0') != std::string::npos)
                    error(p, "sysctl values are a single line");
                node.sysctls.emplace_back(key, v);
            }
        }
    if (auto it = j.find("exec"); it != j.end() && it->is_array())
        for (const auto& item : *it) {
            Command c;
            if (item.is_string()) {
                c.shell = true;
                c.argv = {"/bin/sh", "-c", item.get<std::string>()};
            } else if (item.is_array()) {
                for (const auto& a : item)
                    if (a.is_string()) c.argv.push_back(a.get<std::string>());
            }
            node.exec.push_back(std::move(c));
        }
    if (auto it = j.find("env"); it != j.end() && it->is_object())
        for (const auto& [key, value] : it->items()) {
            if (!value.is_string()) continue;
            std::string v = value.get<std::string>();
            if (v.find('\0') != std::string::npos)
                error(ptr + "/env/" + token(key), "environment values cannot hold a NUL byte");
            node.env.emplace_back(key, std::move(v));
        }
    if (auto it = j.find("user"); it != j.end()) {
        if (it->is_number_unsigned()) {
            node.user = std::to_string(it->get<std::uint64_t>());
        } else if (it->is_string()) {
            node.user = it->get<std::string>();
            // What `up` does with it: the name is looked up in this host's user database.
            struct passwd pw {};
            struct passwd* found = nullptr;
            std::vector<char> buf(16384);
            if (::getpwnam_r(node.user.c_str(), &pw, buf.data(), buf.size(), &found) != 0 || !found)
                error(ptr + "/user", "no user " + quote(node.user) + " on this host");
        }
    }
    if (auto it = j.find("daemons"); it != j.end() && it->is_array())
        for (const auto& item : *it) {
            auto strings = [](const Json& array) {
                std::vector<std::string> out;
                if (array.is_array())
                    for (const auto& a : array)
                        if (a.is_string()) out.push_back(a.get<std::string>());
                return out;
            };
            Daemon d;
            if (item.is_array()) {
                d.argv = strings(item);
            } else if (item.is_object()) {
                if (auto run = item.find("run"); run != item.end()) d.argv = strings(*run);
                if (auto ready = item.find("ready"); ready != item.end() && ready->is_object()) {
                    if (auto port = ready->find("port"); port != ready->end() && port->is_number_integer())
                        d.ready_port = static_cast<std::uint16_t>(port->get<int>());
                    if (auto run = ready->find("run"); run != ready->end()) d.ready_run = strings(*run);
                }
                if (auto t = item.find("ready_timeout_s"); t != item.end() && t->is_number())
                    d.ready_timeout_s = t->get<double>();
            }
            node.daemons.push_back(std::move(d));
        }
}

void Builder::interface(Node& node, PendingNode& pend, const std::string& name, const Json& j, const std::string& ptr) {
    if (auto why = ifname_problem(name); !why.empty()) error(ptr, why);
    Interface iface;
    iface.name = name;
    iface.declared = true;
    std::size_t index = node.interfaces.size();
    pend.iface_pointer[index] = ptr;
    bool is_switch = node.kind == NodeKind::switch_;
    std::string type_text;
    if (j.is_object())
        if (auto it = j.find("type"); it != j.end() && it->is_string()) type_text = it->get<std::string>();

    if (name == "lo") {
        iface.type = InterfaceType::loopback;
        if (!type_text.empty()) error(ptr + "/type", "lo is the loopback; it takes no type");
    } else if (is_switch && name == "br0") {
        iface.type = InterfaceType::bridge;
        if (!type_text.empty() && type_text != "bridge") error(ptr + "/type", "br0 is the switch's own bridge");
    } else if (type_text == "tap") iface.type = InterfaceType::tap;
    else if (type_text == "tun") iface.type = InterfaceType::tun;
    else if (type_text == "dummy") iface.type = InterfaceType::dummy;
    else if (type_text == "vlan") iface.type = InterfaceType::vlan;
    else if (type_text == "bridge") iface.type = InterfaceType::bridge;
    else iface.type = InterfaceType::veth;

    bool switch_port = is_switch && name != "br0" && name != "lo";
    if (switch_port) {
        if (iface.type == InterfaceType::tun)
            error(ptr + "/type",
                  "a TUN device carries IP packets, not Ethernet frames, so it cannot be a "
                  "switch port; use a tap");
        else if (iface.type == InterfaceType::vlan || iface.type == InterfaceType::bridge)
            error(ptr + "/type", "a switch's ports are veth, tap or dummy interfaces");
    }
    if (!j.is_object()) {
        add_iface(node, pend, std::move(iface));
        return;
    }

    auto field = [&](const char* key) -> const Json* {
        auto it = j.find(key);
        return it == j.end() ? nullptr : &*it;
    };
    auto only_for = [&](const char* key, bool allowed, const std::string& who) {
        if (field(key) && !allowed) error(ptr + "/" + key, std::string(key) + " applies to " + who + " only");
    };
    bool tuntap = iface.type == InterfaceType::tap || iface.type == InterfaceType::tun;
    only_for("owner", tuntap, "tap and tun interfaces");
    only_for("group", tuntap, "tap and tun interfaces");
    only_for("parent", iface.type == InterfaceType::vlan, "vlan interfaces");
    only_for("id", iface.type == InterfaceType::vlan, "vlan interfaces");
    only_for("ports", iface.type == InterfaceType::bridge && !is_switch,
             "bridge interfaces of hosts and routers (a switch's ports are all its other interfaces)");
    bool vlan_port = switch_port && node.vlan_filtering;
    only_for("pvid", vlan_port, "ports of a switch with vlan_filtering");
    only_for("tagged", vlan_port, "ports of a switch with vlan_filtering");

    if (auto* a = field("addresses"); a && a->is_array()) {
        if (switch_port && !a->empty())
            error(ptr + "/addresses", "a switch port carries no addresses (give them to br0, or use a host)");
        for (std::size_t i = 0; i < a->size(); ++i) {
            if (!(*a)[i].is_string()) continue;
            std::string text = (*a)[i].get<std::string>();
            std::string p = ptr + "/addresses/" + std::to_string(i);
            auto prefix = IpPrefix::parse(text);
            if (!prefix) {
                pend.bad_address = true;
                error(p, quote(text) + " is not an address with a prefix length (e.g. 10.0.1.10/24 or fd00::1/64)");
                continue;
            }
            if (prefix->address.family == AF_INET && prefix->length <= 30) {
                if (prefix->address == prefix->network())
                    error(p, text + " is the network address of its prefix, not a host address");
                else if (prefix->address == prefix->broadcast())
                    error(p, text + " is the broadcast address of its prefix, not a host address");
            }
            iface.addresses.push_back(*prefix);
            pend.address_pointer[index].push_back(p);
        }
    }
    if (auto* m = field("mac"); m && m->is_string()) {
        auto mac = parse_mac(m->get<std::string>());
        if (!mac) {
            // the schema's pattern has said so
        } else if ((*mac)[0] & 1) error(ptr + "/mac", "a multicast MAC address cannot be an interface's");
        else if (*mac == Mac{}) error(ptr + "/mac", "the all-zero MAC address cannot be an interface's");
        else iface.mac = mac;
        if (iface.type == InterfaceType::tun || iface.type == InterfaceType::loopback)
            error(ptr + "/mac", "a " + std::string(to_string(iface.type)) + " interface has no MAC address");
    }
    if (auto* m = field("mtu"); m && m->is_number_integer()) iface.mtu = m->get<std::uint32_t>();
    if (auto* u = field("up"); u && u->is_boolean()) iface.up = u->get<bool>();
    if (auto* sh = field("shared_addresses"); sh && sh->is_boolean() && sh->get<bool>())
        pend.shared_addresses.insert(index);
    if (auto* o = field("owner"); o && o->is_number_integer()) iface.owner = o->get<std::uint32_t>();
    if (auto* g = field("group"); g && g->is_number_integer()) iface.group = g->get<std::uint32_t>();
    if (iface.type == InterfaceType::vlan) {
        auto* parent = field("parent");
        auto* id = field("id");
        if (!parent) error(ptr, "a vlan interface needs a parent");
        else if (parent->is_string()) pend.vlan_parent[index] = {parent->get<std::string>(), ptr + "/parent"};
        if (!id) error(ptr, "a vlan interface needs an id");
        else if (id->is_number_integer()) iface.vlan_id = id->get<std::uint16_t>();
    }
    if (auto* ports = field("ports"); ports && ports->is_array() && !is_switch) {
        auto& refs = pend.bridge_ports[index];
        for (std::size_t i = 0; i < ports->size(); ++i)
            if ((*ports)[i].is_string())
                refs.push_back({(*ports)[i].get<std::string>(), ptr + "/ports/" + std::to_string(i)});
    }
    if (auto* pvid = field("pvid"); pvid && pvid->is_number_integer()) iface.pvid = pvid->get<std::uint16_t>();
    if (auto* tagged = field("tagged"); tagged && tagged->is_array()) {
        for (std::size_t i = 0; i < tagged->size(); ++i) {
            if (!(*tagged)[i].is_number_integer()) continue;
            auto vid = (*tagged)[i].get<std::uint16_t>();
            if (std::find(iface.tagged.begin(), iface.tagged.end(), vid) != iface.tagged.end())
                error(ptr + "/tagged/" + std::to_string(i), "VLAN " + std::to_string(vid) + " is listed twice");
            else if (iface.pvid && *iface.pvid == vid)
                error(ptr + "/tagged/" + std::to_string(i),
                      "VLAN " + std::to_string(vid) +
                          " is the port's pvid; a VLAN is untagged or tagged on a port, not both");
            iface.tagged.push_back(vid);
        }
    }
    add_iface(node, pend, std::move(iface));
}

void Builder::route(Node& node, PendingNode& pend, const Json& j, const std::string& ptr) {
    Route r;
    pend.route_pointer.push_back(ptr);
    pend.route_dev.emplace_back();
    if (!j.is_object()) {
        node.routes.push_back(r);
        return;
    }
    if (auto it = j.find("via"); it != j.end() && it->is_string()) {
        auto via = IpAddress::parse(it->get<std::string>());
        if (!via) error(ptr + "/via", quote(it->get<std::string>()) + " is not an IPv4 or IPv6 address");
        else r.via = via;
    }
    if (auto it = j.find("to"); it != j.end() && it->is_string()) {
        std::string to = it->get<std::string>();
        if (to == "default") {
            r.family = r.via ? r.via->family : AF_INET;
        } else if (auto p = IpPrefix::parse(to)) {
            r.family = p->address.family;
            if (p->address != p->network())
                error(ptr + "/to",
                      to + " has host bits set; did you mean " + IpPrefix{p->network(), p->length}.to_string() + "?");
            r.to = IpPrefix{p->network(), p->length};
        } else {
            error(ptr + "/to", quote(to) + " is neither \"default\" nor a prefix such as 10.0.3.0/24");
        }
        if (r.via && r.family && r.via->family != r.family)
            error(ptr + "/via",
                  "gateway " + r.via->to_string() + " is not of the destination's family (" +
                      (r.family == AF_INET ? "IPv4" : "IPv6") + ")");
    }
    if (auto it = j.find("dev"); it != j.end() && it->is_string())
        pend.route_dev.back() = RawRef{it->get<std::string>(), ptr + "/dev"};
    if (auto it = j.find("metric"); it != j.end() && it->is_number_integer()) r.metric = it->get<std::uint32_t>();
    if (!j.contains("via") && !j.contains("dev")) error(ptr, "a route needs via, dev or both");
    for (std::size_t i = 0; i < node.routes.size(); ++i) {
        const Route& o = node.routes[i];
        if (o.family == r.family && o.to == r.to && o.metric.value_or(0) == r.metric.value_or(0) && r.family)
            error(ptr, "the same destination and metric as routes/" + std::to_string(i));
    }
    node.routes.push_back(r);
}

// An address belongs to one interface: given twice, pings "succeed" against the wrong
// node. IPv6 link-local addresses (fe80::/10) are scoped to their link, so only two on
// one layer-2 segment (a link, a bridge and its ports) collide. Interfaces that say
// "shared_addresses": true may share theirs with each other (anycast, reused networks).
void Builder::duplicate_addresses() {
    std::vector<std::size_t> base(topo_.nodes.size() + 1, 0);
    for (std::size_t n = 0; n < topo_.nodes.size(); ++n) base[n + 1] = base[n] + topo_.nodes[n].interfaces.size();
    std::vector<std::size_t> parent(base.back());
    for (std::size_t i = 0; i < parent.size(); ++i) parent[i] = i;
    auto find = [&](std::size_t x) {
        while (parent[x] != x) x = parent[x] = parent[parent[x]];
        return x;
    };
    for (const auto& l : topo_.links)
        if (l.ends[0].node != l.ends[1].node || l.ends[0].interface != l.ends[1].interface)
            parent[find(base[l.ends[0].node] + l.ends[0].interface)] = find(base[l.ends[1].node] + l.ends[1].interface);
    for (std::size_t n = 0; n < topo_.nodes.size(); ++n)
        for (std::size_t i = 0; i < topo_.nodes[n].interfaces.size(); ++i)
            if (auto m = topo_.nodes[n].interfaces[i].master) parent[find(base[n] + i)] = find(base[n] + *m);
    // (address, segment or 0) -> where it was first, and whether that one may be shared
    std::map<std::pair<IpAddress, std::size_t>, std::pair<std::string, bool>> seen;
    for (std::size_t n = 0; n < topo_.nodes.size(); ++n) {
        const Node& node = topo_.nodes[n];
        for (std::size_t i = 0; i < node.interfaces.size(); ++i) {
            const auto& ptrs = pending_[n].address_pointer[i];
            const auto& addrs = node.interfaces[i].addresses;
            bool shared = pending_[n].shared_addresses.count(i) > 0;
            for (std::size_t k = 0; k < addrs.size() && k < ptrs.size(); ++k) {
                const IpAddress& a = addrs[k].address;
                bool link_local = a.family == AF_INET6 && a.bytes[0] == 0xfe && (a.bytes[1] & 0xc0) == 0x80;
                std::size_t scope = link_local ? find(base[n] + i) + 1 : 0;
                auto [it, fresh] = seen.emplace(std::make_pair(a, scope), std::make_pair(ptrs[k], shared));
                if (!fresh && !(shared && it->second.second))
                    error(ptrs[k],
                          a.to_string() + " is already the address at " + it->second.first +
                              (link_local ? " on the same link" : "") +
                              "; an address belongs to one interface (unless both say "
                              "\"shared_addresses\": true)");
            }
        }
    }
}

// A gateway must be on a link of the node: inside the prefix of one of its addresses
// (of the route's dev, when it names one), or of a route through a dev alone. The
// kernel refuses any other ("Nexthop has invalid gateway"). A link-local IPv6 gateway
// needs the dev it is on.
void Builder::gateways() {
    for (std::size_t n = 0; n < topo_.nodes.size(); ++n) {
        const Node& node = topo_.nodes[n];
        PendingNode& pend = pending_[n];
        if (pend.bad_address) continue;
        for (std::size_t r = 0; r < node.routes.size(); ++r) {
            const Route& route = node.routes[r];
            if (!route.via || (route.family && route.via->family != route.family)) continue;
            if (pend.route_dev[r] && !route.dev) continue;  // an unknown dev, said already
            const IpAddress& via = *route.via;
            std::string ptr = pend.route_pointer[r] + "/via";
            bool link_local = via.family == AF_INET6 && via.bytes[0] == 0xfe && (via.bytes[1] & 0xc0) == 0x80;
            if (link_local) {
                if (!route.dev) error(ptr, "gateway " + via.to_string() + " is link-local; give the dev it is on");
                continue;
            }
            bool on_link = false;
            for (std::size_t i = 0; i < node.interfaces.size() && !on_link; ++i) {
                if (route.dev && *route.dev != i) continue;
                for (const auto& p : node.interfaces[i].addresses)
                    on_link = on_link || (p.address.family == via.family && p.contains(via));
            }
            for (const auto& other : node.routes)
                if (!other.via && other.dev && other.family == via.family && (!route.dev || *route.dev == *other.dev) &&
                    (!other.to || other.to->contains(via)))
                    on_link = true;
            if (!on_link)
                error(ptr,
                      "gateway " + via.to_string() + " is in none of " + node.name + "'s connected prefixes" +
                          (route.dev ? " on " + node.interfaces[*route.dev].name : std::string()) +
                          "; a gateway must be on one of the node's links");
        }
    }
}

}  // namespace labctl::topology::detail
