#include "plan/builder.hpp"

namespace labctl::plan {

using namespace detail;

const char* to_string(OpKind kind) {
    switch (kind) {
        case OpKind::stop_processes: return "stop_processes";
        case OpKind::delete_netns: return "delete_netns";
        case OpKind::delete_link: return "delete_link";
        case OpKind::delete_address: return "delete_address";
        case OpKind::delete_route: return "delete_route";
        case OpKind::delete_qdisc: return "delete_qdisc";
        case OpKind::create_netns: return "create_netns";
        case OpKind::add_bridge: return "add_bridge";
        case OpKind::add_dummy: return "add_dummy";
        case OpKind::add_veth: return "add_veth";
        case OpKind::set_link: return "set_link";
        case OpKind::add_vlan: return "add_vlan";
        case OpKind::bridge_vlans: return "bridge_vlans";
        case OpKind::replace_qdisc: return "replace_qdisc";
        case OpKind::write_sysctls: return "write_sysctls";
        case OpKind::add_address: return "add_address";
        case OpKind::add_route: return "add_route";
        case OpKind::wait_links: return "wait_links";
        case OpKind::finish_bridges: return "finish_bridges";
        case OpKind::run_exec: return "run_exec";
        case OpKind::start_daemons: return "start_daemons";
    }
    return "?";
}

Stage stage_of(OpKind kind) {
    switch (kind) {
        case OpKind::stop_processes: return Stage::stop;
        case OpKind::delete_netns:
        case OpKind::delete_link:
        case OpKind::delete_address:
        case OpKind::delete_route:
        case OpKind::delete_qdisc: return Stage::remove;
        case OpKind::create_netns: return Stage::namespaces;
        case OpKind::add_bridge:
        case OpKind::add_dummy: return Stage::devices;
        case OpKind::add_veth: return Stage::veths;
        case OpKind::set_link:
        case OpKind::add_vlan:
        case OpKind::bridge_vlans:
        case OpKind::replace_qdisc:
        case OpKind::write_sysctls:
        case OpKind::add_address:
        case OpKind::add_route: return Stage::configure;
        case OpKind::wait_links:
        case OpKind::finish_bridges: return Stage::wait;
        case OpKind::run_exec: return Stage::exec;
        case OpKind::start_daemons: return Stage::daemons;
    }
    return Stage::configure;
}

std::string Change::line() const {
    std::string s(1, op);
    s += " ";
    if (kind == "node" || kind == "link" || (kind == "interface" && op != '~')) s += kind + " ";
    s += target;
    if (kind != "node" && kind != "link" && kind != "interface") s += " " + kind;
    if (!detail.empty()) s += " " + detail;
    return s;
}

std::string Plan::describe(const Topology& desired, std::size_t i) const {
    const Op& op = ops.at(i);
    auto node = [&]() -> const Node& { return desired.nodes.at(op.node); };
    auto ifname = [&]() { return node().interfaces.at(op.iface).name; };
    // The node's interface with this index (the plan chose it); the number only if none.
    auto ifname_of = [&](int index) {
        const auto& indexes = ifindex.at(op.node);
        for (std::size_t k = 0; k < indexes.size() && k < node().interfaces.size(); ++k)
            if (indexes[k] == index) return node().interfaces[k].name;
        return "ifindex " + std::to_string(index);
    };
    switch (op.kind) {
        case OpKind::stop_processes:
            return op.name + ": stopping " + (op.all_processes ? "its processes" : "its daemons");
        case OpKind::delete_netns: return "removing namespace " + op.name;
        case OpKind::delete_link: return node().name + ": deleting " + op.name;
        case OpKind::delete_address: return node().name + ": removing " + op.prefix.to_string() + " from " + ifname();
        case OpKind::delete_route:
            return node().name + ": removing route " + route_text(op.route, &node(), &ifindex.at(op.node));
        case OpKind::delete_qdisc: return node().name + ": removing the impairment of " + ifname();
        case OpKind::create_netns: return "creating namespace " + node().netns;
        case OpKind::add_bridge: return node().name + ": creating bridge " + ifname();
        case OpKind::add_dummy: return node().name + ": creating dummy " + ifname();
        case OpKind::add_veth: {
            const Link& l = desired.links.at(op.link);
            return node().name + ": creating veth " + desired.end_name(l.ends[0]) + " <-> " +
                desired.end_name(l.ends[1]);
        }
        case OpKind::set_link: {
            std::string s = node().name + ": setting " + ifname();
            if (op.up) s += *op.up ? " up" : " down";
            if (op.mtu) s += " mtu " + std::to_string(*op.mtu);
            if (op.master) s += " master " + ifname_of(*op.master);
            return s;
        }
        case OpKind::add_vlan: return node().name + ": creating vlan " + ifname();
        case OpKind::bridge_vlans: return node().name + ": VLANs of port " + ifname();
        case OpKind::replace_qdisc: return node().name + ": impairing " + ifname();
        case OpKind::write_sysctls: return node().name + ": writing sysctls";
        case OpKind::add_address: return node().name + ": adding " + op.prefix.to_string() + " to " + ifname();
        case OpKind::add_route:
            return node().name + ": adding route " + route_text(op.route, &node(), &ifindex.at(op.node));
        case OpKind::wait_links: return "waiting for " + std::to_string(op.wait.size()) + " link ends to come up";
        case OpKind::finish_bridges: return node().name + ": turning on multicast snooping on " + ifname();
        case OpKind::run_exec: return node().name + ": running exec commands";
        case OpKind::start_daemons: return node().name + ": starting daemons";
    }
    return "?";
}

}  // namespace labctl::plan
