// Semantic validation: everything the schema cannot say, and resolution into the model.

#include "topology/build.hpp"

#include <pwd.h>

#include <algorithm>
#include <map>
#include <regex>
#include <set>
#include <unordered_map>

namespace labctl::topology {

std::string pointer_token(const std::string& key) {
    std::string out;
    for (char c : key) {
        if (c == '~') out += "~0";
        else if (c == '/') out += "~1";
        else out += c;
    }
    return out;
}

namespace {

using Json = nlohmann::ordered_json;

constexpr std::size_t kMaxBridgePorts = 1023;

std::string token(const std::string& key) { return pointer_token(key); }

std::string quote(const std::string& s) { return "\"" + s + "\""; }

std::optional<Mac> parse_mac(const std::string& text) {
    if (text.size() != 17) return std::nullopt;
    Mac mac{};
    for (std::size_t i = 0; i < 6; ++i) {
        if (i > 0 && text[i * 3 - 1] != ':') return std::nullopt;
        unsigned value = 0;
        for (std::size_t j = 0; j < 2; ++j) {
            char c = text[i * 3 + j];
            value <<= 4;
            if (c >= '0' && c <= '9') value |= static_cast<unsigned>(c - '0');
            else if (c >= 'a' && c <= 'f') value |= static_cast<unsigned>(c - 'a' + 10);
            else if (c >= 'A' && c <= 'F') value |= static_cast<unsigned>(c - 'A' + 10);
            else return std::nullopt;
        }
        mac[i] = static_cast<std::uint8_t>(value);
    }
    return mac;
}

bool valid_node_name(const std::string& s) {
    if (s.empty() || s.size() > 16 || s[0] < 'a' || s[0] > 'z') return false;
    return std::all_of(s.begin(), s.end(), [](char c) {
        return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-';
    });
}

// Why an interface name is unusable, or "" when it is fine.
std::string ifname_problem(const std::string& name) {
    if (name.empty()) return "interface names cannot be empty";
    if (name.size() > 15)
        return "interface name " + quote(name) + " is " + std::to_string(name.size()) +
               " bytes; Linux allows at most 15 (IFNAMSIZ)";
    if (name == "." || name == "..") return "interface name " + quote(name) + " is not allowed";
    for (unsigned char c : name) {
        if (c == '/' || c == ':' || c <= ' ' || c == 0x7f)
            return "interface name " + quote(name) + " contains '/', ':', a space or a control character";
        // The kernel's dev_valid_name() uses isspace() of its own ctype table, where byte
        // 0xA0 (the end of UTF-8 "à", "Ġ"...) is a space: the kernel would refuse it.
        if (c == 0xA0)
            return "interface name " + quote(name) + " contains byte 0xA0, which the kernel counts as a space";
        if (c == '%')
            return "interface name " + quote(name) +
                   " contains '%' (the kernel would replace %d with a number)";
    }
    return "";
}

// The rule rtnl's sysctl_path() applies: each '.'-separated component, with '/' read as
// '.', is neither "." nor "..".
bool sysctl_components_ok(const std::string& key) {
    std::size_t start = 0;
    for (;;) {
        const std::size_t dot = key.find('.', start);
        const std::string part = key.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
        if (part == "/" || part == "//") return false;
        if (dot == std::string::npos) return true;
        start = dot + 1;
    }
}

struct RawRef {  // a reference to an interface by name, resolved once links exist
    std::string name;
    std::string pointer;
};

struct PendingNode {
    std::unordered_map<std::string, std::size_t> iface_index;  // name -> index in interfaces
    std::set<std::string> named_by_links;  // interface names written in any link, valid or not
    // interface index -> parent name (vlan) / port names (bridge)
    std::map<std::size_t, RawRef> vlan_parent;
    std::map<std::size_t, std::vector<RawRef>> bridge_ports;
    std::map<std::size_t, std::string> iface_pointer;  // declared interfaces only
    // routes in file order, with their raw dev
    std::vector<std::optional<RawRef>> route_dev;
    std::vector<std::string> route_pointer;
    // interface index -> the pointer of each of its addresses, in Interface::addresses order
    std::map<std::size_t, std::vector<std::string>> address_pointer;
    bool bad_address = false;  // one was not an address: its gateways are not judged
    std::set<std::size_t> shared_addresses;  // interfaces with "shared_addresses": true
};

class Builder {
public:
    Builder(const Json& doc, std::vector<TopologyProblem>& problems)
        : doc_(doc), problems_(problems) {}

    Topology run(const std::string& source) {
        topo_.source = source;
        if (!doc_.is_object()) return std::move(topo_);
        if (auto it = doc_.find("name"); it != doc_.end() && it->is_string())
            topo_.name = it->get<std::string>();
        if (auto it = doc_.find("description"); it != doc_.end() && it->is_string())
            topo_.description = it->get<std::string>();
        if (auto it = doc_.find("nodes"); it != doc_.end() && it->is_object()) nodes(*it);
        if (auto it = doc_.find("links"); it != doc_.end() && it->is_array()) links(*it);
        finish_nodes();
        duplicate_addresses();
        gateways();
        if (auto it = doc_.find("checks"); it != doc_.end() && it->is_array()) checks(*it);
        return std::move(topo_);
    }

private:
    void error(std::string pointer, std::string message) {
        problems_.push_back({std::move(pointer), std::move(message)});
    }

    // ---- nodes -------------------------------------------------------------------------

    void nodes(const Json& j) {
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

    void node_body(Node& node, PendingNode& pend, const Json& j, const std::string& ptr) {
        if (auto it = j.find("kind"); it != j.end() && it->is_string()) {
            std::string k = it->get<std::string>();
            node.kind = k == "router" ? NodeKind::router
                        : k == "switch" ? NodeKind::switch_
                                        : NodeKind::host;
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
            for (std::size_t i = 0; i < it->size(); ++i)
                route(node, pend, (*it)[i], ptr + "/routes/" + std::to_string(i));
        if (auto it = j.find("sysctls"); it != j.end() && it->is_object())
            for (const auto& [key, value] : it->items()) {
                std::string p = ptr + "/sysctls/" + token(key);
                if (key.find("..") != std::string::npos || key.back() == '.' ||
                    key.compare(0, 4, "net.") != 0)
                    error(p, "sysctl keys must be under net. (e.g. net.ipv4.ip_forward)");
                // A '/' stands for a '.' inside one component (an interface name such as
                // eth0.10), as with sysctl(8); `up` refuses a component that becomes "."
                // or "..", so does this.
                else if (!sysctl_components_ok(key))
                    error(p, "a '/' in a sysctl key stands for a '.' inside a name (net.ipv4.conf.eth0/10.rp_filter); "
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

    void interface(Node& node, PendingNode& pend, const std::string& name, const Json& j,
                   const std::string& ptr) {
        if (auto why = ifname_problem(name); !why.empty()) error(ptr, why);
        Interface iface;
        iface.name = name;
        iface.declared = true;
        std::size_t index = node.interfaces.size();
        pend.iface_pointer[index] = ptr;
        bool is_switch = node.kind == NodeKind::switch_;
        std::string type_text;
        if (j.is_object())
            if (auto it = j.find("type"); it != j.end() && it->is_string())
                type_text = it->get<std::string>();

        if (name == "lo") {
            iface.type = InterfaceType::loopback;
            if (!type_text.empty()) error(ptr + "/type", "lo is the loopback; it takes no type");
        } else if (is_switch && name == "br0") {
            iface.type = InterfaceType::bridge;
            if (!type_text.empty() && type_text != "bridge")
                error(ptr + "/type", "br0 is the switch's own bridge");
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
                error(ptr + "/addresses",
                      "a switch port carries no addresses (give them to br0, or use a host)");
            for (std::size_t i = 0; i < a->size(); ++i) {
                if (!(*a)[i].is_string()) continue;
                std::string text = (*a)[i].get<std::string>();
                std::string p = ptr + "/addresses/" + std::to_string(i);
                auto prefix = IpPrefix::parse(text);
                if (!prefix) {
                    pend.bad_address = true;
                    error(p, quote(text) +
                                 " is not an address with a prefix length (e.g. 10.0.1.10/24 or fd00::1/64)");
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
        if (auto* pvid = field("pvid"); pvid && pvid->is_number_integer())
            iface.pvid = pvid->get<std::uint16_t>();
        if (auto* tagged = field("tagged"); tagged && tagged->is_array()) {
            for (std::size_t i = 0; i < tagged->size(); ++i) {
                if (!(*tagged)[i].is_number_integer()) continue;
                auto vid = (*tagged)[i].get<std::uint16_t>();
                if (std::find(iface.tagged.begin(), iface.tagged.end(), vid) != iface.tagged.end())
                    error(ptr + "/tagged/" + std::to_string(i), "VLAN " + std::to_string(vid) + " is listed twice");
                else if (iface.pvid && *iface.pvid == vid)
                    error(ptr + "/tagged/" + std::to_string(i),
                          "VLAN " + std::to_string(vid) + " is the port's pvid; a VLAN is untagged or tagged on a port, not both");
                iface.tagged.push_back(vid);
            }
        }
        add_iface(node, pend, std::move(iface));
    }

    void route(Node& node, PendingNode& pend, const Json& j, const std::string& ptr) {
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
                    error(ptr + "/to", to + " has host bits set; did you mean " +
                                           IpPrefix{p->network(), p->length}.to_string() + "?");
                r.to = IpPrefix{p->network(), p->length};
            } else {
                error(ptr + "/to", quote(to) + " is neither \"default\" nor a prefix such as 10.0.3.0/24");
            }
            if (r.via && r.family && r.via->family != r.family)
                error(ptr + "/via", "gateway " + r.via->to_string() + " is not of the destination's family (" +
                                        (r.family == AF_INET ? "IPv4" : "IPv6") + ")");
        }
        if (auto it = j.find("dev"); it != j.end() && it->is_string())
            pend.route_dev.back() = RawRef{it->get<std::string>(), ptr + "/dev"};
        if (auto it = j.find("metric"); it != j.end() && it->is_number_integer())
            r.metric = it->get<std::uint32_t>();
        if (!j.contains("via") && !j.contains("dev")) error(ptr, "a route needs via, dev or both");
        for (std::size_t i = 0; i < node.routes.size(); ++i) {
            const Route& o = node.routes[i];
            if (o.family == r.family && o.to == r.to && o.metric.value_or(0) == r.metric.value_or(0) && r.family)
                error(ptr, "the same destination and metric as routes/" + std::to_string(i));
        }
        node.routes.push_back(r);
    }

    // ---- links -------------------------------------------------------------------------

    std::optional<LinkEnd> endpoint(const std::string& text, const std::string& ptr, std::size_t link) {
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
            error(ptr, text + " is a " + to_string(iface.type) +
                           " interface; only veth interfaces are link ends");
            return std::nullopt;
        }
        if (iface.link) {
            error(ptr, text + " is already an end of links/" + std::to_string(*iface.link));
            return std::nullopt;
        }
        iface.link = link;
        return LinkEnd{*n, *i};
    }

    void links(const Json& j) {
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
            if (eps == l.end() || !eps->is_array() || eps->size() != 2 || !(*eps)[0].is_string() ||
                !(*eps)[1].is_string())
                continue;  // reported by the schema
            std::string a = (*eps)[0].get<std::string>(), b = (*eps)[1].get<std::string>();
            if (a.substr(0, a.find(':')) == b.substr(0, b.find(':'))) {
                error(ptr + "/endpoints", "both ends are on node " + quote(a.substr(0, a.find(':'))) +
                                              "; a link joins two different nodes");
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
                        error(ptr + "/mtu", topo_.end_name(e) + " has mtu " + std::to_string(*iface.mtu) +
                                                ", the link " + std::to_string(*link.mtu));
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

    // ---- after links: resolve names, fill implicit interfaces ------------------------------

    std::optional<std::size_t> resolve(const Node& node, const PendingNode& pend, const RawRef& ref) {
        auto i = find_iface(pend, ref.name);
        if (!i) error(ref.pointer, "node " + node.name + " has no interface " + quote(ref.name));
        return i;
    }

    void finish_nodes() {
        for (std::size_t ni = 0; ni < topo_.nodes.size(); ++ni) {
            Node& node = topo_.nodes[ni];
            PendingNode& pend = pending_[ni];
            for (std::size_t i = 0; i < node.interfaces.size(); ++i) {
                const Interface& iface = node.interfaces[i];
                if (iface.declared && iface.type == InterfaceType::veth && !iface.link &&
                    !pend.named_by_links.count(iface.name))
                    error(pend.iface_pointer[i], iface.name +
                                                     " is a veth interface in no link; add a link with end " +
                                                     node.name + ":" + iface.name + ", or give it a type");
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
                    error("/nodes/" + token(node.name), "switch " + node.name + " has " + std::to_string(ports) +
                                                           " ports; a Linux bridge takes at most " +
                                                           std::to_string(kMaxBridgePorts) + " (split it into several switches)");
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
                        error(pend.iface_pointer[i] + "/id", "VLAN " + std::to_string(node.interfaces[i].vlan_id) +
                                                                   " on " + ref.name + " is already " + node.interfaces[j].name);
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

    // ---- addresses and gateways, once every interface is known --------------------------

    // An address belongs to one interface: given twice, pings "succeed" against the wrong
    // node. IPv6 link-local addresses (fe80::/10) are scoped to their link, so only two on
    // one layer-2 segment (a link, a bridge and its ports) collide. Interfaces that say
    // "shared_addresses": true may share theirs with each other (anycast, reused networks).
    void duplicate_addresses() {
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
                        error(ptrs[k], a.to_string() + " is already the address at " + it->second.first +
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
    void gateways() {
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
                    if (!other.via && other.dev && other.family == via.family &&
                        (!route.dev || *route.dev == *other.dev) && (!other.to || other.to->contains(via)))
                        on_link = true;
                if (!on_link)
                    error(ptr, "gateway " + via.to_string() + " is in none of " + node.name + "'s connected prefixes" +
                                   (route.dev ? " on " + node.interfaces[*route.dev].name : std::string()) +
                                   "; a gateway must be on one of the node's links");
            }
        }
    }

    // ---- checks ------------------------------------------------------------------------

    void checks(const Json& j) {
        for (std::size_t ci = 0; ci < j.size(); ++ci) {
            const Json& c = j[ci];
            std::string ptr = "/checks/" + std::to_string(ci);
            if (!c.is_object()) continue;
            if (c.contains("on") || c.contains("run")) {
                command_check(c, ptr);
                continue;
            }
            Check check;
            common_check_fields(check, c);
            bool ok = true;
            int family = 0;
            if (auto f = c.find("family"); f != c.end() && f->is_number_integer())
                family = f->get<int>() == 6 ? AF_INET6 : AF_INET;
            if (auto f = c.find("from"); f != c.end() && f->is_string()) {
                std::string from = f->get<std::string>();
                check.from_text = from;
                std::string node_name = from.substr(0, from.find(':'));
                auto n = find_node(node_name);
                if (!n) {
                    error(ptr + "/from", "no node " + quote(node_name));
                    ok = false;
                } else {
                    check.from_node = *n;
                    if (from.find(':') != std::string::npos) {
                        std::string ifname = from.substr(from.find(':') + 1);
                        check.from_interface = find_iface(pending_[*n], ifname);
                        if (!check.from_interface) {
                            error(ptr + "/from", "node " + node_name + " has no interface " + quote(ifname));
                            ok = false;
                        }
                    }
                }
            } else {
                ok = false;
            }
            if (auto t = c.find("to"); t != c.end() && t->is_string()) {
                check.to_text = t->get<std::string>();
                if (auto addr = IpAddress::parse(check.to_text)) {
                    check.to = *addr;
                    if (family && family != addr->family)
                        error(ptr + "/family", "family does not match the address " + check.to_text);
                } else if (!resolve_target(check, family, ptr + "/to")) {
                    ok = false;
                }
            } else {
                ok = false;
            }
            if (ok) {
                const Node& src = topo_.nodes[check.from_node];
                for (const auto& iface : src.interfaces)
                    for (const auto& p : iface.addresses)
                        if (p.address == check.to) {
                            error(ptr + "/to", check.to.to_string() + " is " + src.name + "'s own address (" +
                                                   iface.name + "); a check pings another node");
                            ok = false;
                        }
            }
            if (auto e = c.find("expect"); e != c.end() && e->is_string())
                check.expect = e->get<std::string>() == "unreachable" ? Expect::unreachable : Expect::reachable;
            if (auto n = c.find("count"); n != c.end() && n->is_number_integer()) check.count = n->get<int>();
            if (auto n = c.find("timeout_ms"); n != c.end() && n->is_number_integer())
                check.timeout_ms = n->get<int>();
            if (auto n = c.find("port"); n != c.end() && n->is_number_integer()) {
                check.kind = CheckKind::tcp;
                check.port = static_cast<std::uint16_t>(n->get<int>());
                if (c.contains("count")) error(ptr + "/count", "count is for pings; a TCP check makes one handshake");
            }
            if (ok) topo_.checks.push_back(check);
        }
    }

    // name, points, within_s: every kind has them.
    static void common_check_fields(Check& check, const Json& c) {
        if (auto f = c.find("name"); f != c.end() && f->is_string()) check.name = f->get<std::string>();
        if (auto f = c.find("points"); f != c.end() && f->is_number()) check.points = f->get<double>();
        if (auto f = c.find("within_s"); f != c.end() && f->is_number()) check.within_s = f->get<double>();
    }

    // A command check: `on` + `run`, none of the fields of pings and TCP checks.
    void command_check(const Json& c, const std::string& ptr) {
        Check check;
        check.kind = CheckKind::command;
        common_check_fields(check, c);
        check.timeout_ms = 10000;
        bool ok = true;
        for (const char* field : {"from", "to", "port", "count", "family", "expect"})
            if (c.contains(field))
                error(ptr + "/" + field, std::string(field) + " is not for command checks (on + run)");
        for (const char* field : {"on", "run"})
            if (!c.contains(field)) {
                error(ptr, std::string("a command check needs \"") + field + "\"");
                ok = false;
            }
        if (auto f = c.find("on"); f != c.end() && f->is_string()) {
            auto n = find_node(f->get<std::string>());
            if (!n) {
                error(ptr + "/on", "no node " + quote(f->get<std::string>()));
                ok = false;
            } else {
                check.on_node = *n;
                check.from_text = f->get<std::string>();
            }
        }
        if (auto f = c.find("run"); f != c.end() && f->is_array()) {
            for (const auto& a : *f)
                if (a.is_string()) check.run.push_back(a.get<std::string>());
            Command display{check.run, false};
            check.to_text = display.display();
        }
        if (auto n = c.find("expect_exit"); n != c.end() && n->is_number_integer())
            check.expect_exit = n->get<int>();
        if (auto f = c.find("expect_stdout"); f != c.end() && f->is_string()) {
            check.expect_stdout = f->get<std::string>();
            try {
                std::regex re(*check.expect_stdout, kExpectStdoutSyntax);
            } catch (const std::regex_error& e) {
                error(ptr + "/expect_stdout", "not a valid regular expression: " + std::string(e.what()));
            }
        }
        if (auto n = c.find("timeout_ms"); n != c.end() && n->is_number_integer())
            check.timeout_ms = n->get<int>();
        if (ok) topo_.checks.push_back(check);
    }

    bool resolve_target(Check& check, int family, const std::string& ptr) {
        const std::string& to = check.to_text;
        std::string node_name = to.substr(0, to.find(':'));
        auto n = find_node(node_name);
        if (!n) {
            error(ptr, quote(to) + " is neither a node, node:ifname, nor an IPv4/IPv6 address");
            return false;
        }
        const Node& node = topo_.nodes[*n];
        check.to_node = *n;
        std::vector<const Interface*> scope;
        if (to.find(':') != std::string::npos) {
            auto i = find_iface(pending_[*n], to.substr(to.find(':') + 1));
            if (!i) {
                error(ptr, "node " + node_name + " has no interface " + quote(to.substr(to.find(':') + 1)));
                return false;
            }
            scope.push_back(&node.interfaces[*i]);
        } else {
            for (const auto& iface : node.interfaces) scope.push_back(&iface);
        }
        auto first = [&](int fam) -> std::optional<IpAddress> {
            for (const Interface* iface : scope)
                for (const auto& p : iface->addresses)
                    if (p.address.family == fam) return p.address;
            return std::nullopt;
        };
        std::optional<IpAddress> addr = family ? first(family) : first(AF_INET);
        if (!addr && !family) addr = first(AF_INET6);
        if (!addr) {
            error(ptr, to + " has no " + (family == AF_INET6 ? "IPv6 " : family == AF_INET ? "IPv4 " : "") +
                           "address to ping");
            return false;
        }
        check.to = *addr;
        return true;
    }

    const Json& doc_;
    std::vector<TopologyProblem>& problems_;
    Topology topo_;
    std::vector<PendingNode> pending_;
    std::unordered_map<std::string, std::size_t> node_index_;

    std::optional<std::size_t> find_node(const std::string& name) const {
        auto it = node_index_.find(name);
        if (it == node_index_.end()) return std::nullopt;
        return it->second;
    }
    static std::optional<std::size_t> find_iface(const PendingNode& pend, const std::string& name) {
        auto it = pend.iface_index.find(name);
        if (it == pend.iface_index.end()) return std::nullopt;
        return it->second;
    }
    // Appends an interface, keeping the name index current.
    static std::size_t add_iface(Node& node, PendingNode& pend, Interface iface) {
        pend.iface_index.emplace(iface.name, node.interfaces.size());
        node.interfaces.push_back(std::move(iface));
        return node.interfaces.size() - 1;
    }
};

}  // namespace

Topology build(const nlohmann::ordered_json& doc, const std::string& source,
               std::vector<TopologyProblem>& problems) {
    return Builder(doc, problems).run(source);
}

}  // namespace labctl::topology
