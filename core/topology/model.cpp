#include "topology/model.hpp"

#include <cstdio>

namespace labctl::topology {

const char* to_string(NodeKind kind) {
    switch (kind) {
        case NodeKind::host: return "host";
        case NodeKind::router: return "router";
        case NodeKind::switch_: return "switch";
    }
    return "?";
}

const char* to_string(InterfaceType type) {
    switch (type) {
        case InterfaceType::veth: return "veth";
        case InterfaceType::tap: return "tap";
        case InterfaceType::tun: return "tun";
        case InterfaceType::dummy: return "dummy";
        case InterfaceType::vlan: return "vlan";
        case InterfaceType::bridge: return "bridge";
        case InterfaceType::loopback: return "loopback";
    }
    return "?";
}

const char* to_string(Expect expect) { return expect == Expect::reachable ? "reachable" : "unreachable"; }

const char* to_string(CheckKind kind) {
    switch (kind) {
        case CheckKind::ping: return "ping";
        case CheckKind::tcp: return "tcp";
        case CheckKind::command: return "command";
    }
    return "?";
}

std::string mac_to_string(const Mac& mac) {
    char buf[18];
    std::snprintf(buf, sizeof buf, "%02x:%02x:%02x:%02x:%02x:%02x", mac[0], mac[1], mac[2], mac[3], mac[4], mac[5]);
    return buf;
}

std::string Route::to_string(const Node& node) const {
    std::string text = to ? to->to_string() : "default";
    if (family == AF_INET6 && !to) text = "default (IPv6)";
    if (via) text += " via " + via->to_string();
    if (dev) text += " dev " + node.interfaces[*dev].name;
    if (metric) text += " metric " + std::to_string(*metric);
    return text;
}

std::string Command::display() const {
    if (shell && argv.size() == 3) return argv[2];
    std::string text;
    for (const auto& a : argv) {
        if (!text.empty()) text += ' ';
        text += a;
    }
    return text;
}

std::string Daemon::display() const { return Command{argv, false}.display(); }

std::string Check::label() const {
    if (!name.empty()) return name;
    if (kind == CheckKind::command) return from_text + ": " + to_text;
    return from_text + " -> " + to_text + (kind == CheckKind::tcp ? " port " + std::to_string(port) : "");
}

std::optional<std::size_t> Node::find_interface(const std::string& ifname) const {
    for (std::size_t i = 0; i < interfaces.size(); ++i)
        if (interfaces[i].name == ifname) return i;
    return std::nullopt;
}

std::optional<IpAddress> Node::first_address(int family) const {
    for (const auto& iface : interfaces)
        for (const auto& p : iface.addresses)
            if (p.address.family == family) return p.address;
    return std::nullopt;
}

std::size_t Node::bridge_index() const { return find_interface("br0").value_or(0); }

std::optional<std::size_t> Topology::find_node(const std::string& node_name) const {
    for (std::size_t i = 0; i < nodes.size(); ++i)
        if (nodes[i].name == node_name) return i;
    return std::nullopt;
}

}  // namespace labctl::topology
