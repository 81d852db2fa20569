#include "plan/builder.hpp"

#include <algorithm>

namespace labctl::plan::detail {

void Builder::configure_fresh(std::size_t n) {
    const Node& node = d_.nodes[n];
    const auto& idx = p_.ifindex[n];
    auto with_node = [&](Op op) {
        op.node = n;
        if (netns_op_[n]) op.deps.push_back(*netns_op_[n]);
        std::size_t id = add(std::move(op));
        node_ops_[n].push_back(id);
        return id;
    };
    // Qdiscs go on before the link comes up (the main end of an impaired link is made
    // down for that reason): no packet leaves unimpaired.
    std::vector<std::optional<std::size_t>> qdisc(node.interfaces.size());
    for (std::size_t i = 0; i < node.interfaces.size(); ++i) {
        if (!is_link_end(node.interfaces[i])) continue;
        const std::size_t l = *node.interfaces[i].link;
        const Link& link = d_.links[l];
        const auto& im = want_impair_[l];
        if (!im.any()) continue;
        {
            const LinkEnd& end = link.ends[node.interfaces[i].link_end];
            Op op;
            op.kind = OpKind::replace_qdisc;
            op.iface = end.interface;
            op.link = l;
            op.ifindex = idx[end.interface];
            op.impair = im;
            if (creator_[n][end.interface]) op.deps.push_back(*creator_[n][end.interface]);
            qdisc[end.interface] = with_node(std::move(op));
        }
    }
    for (std::size_t i = 0; i < node.interfaces.size(); ++i) {
        const Interface& iface = node.interfaces[i];
        bool settable = iface.type == InterfaceType::veth || iface.type == InterfaceType::tap ||
            iface.type == InterfaceType::tun || iface.type == InterfaceType::dummy ||
            iface.type == InterfaceType::loopback;
        if (!settable || done_[n][i]) continue;
        Op op;
        op.kind = OpKind::set_link;
        op.iface = i;
        op.ifindex = idx[i];
        if (iface.type == InterfaceType::loopback) {
            op.up = true;
        } else {
            if (is_port(node, iface)) {
                op.master = idx[*iface.master];
                if (creator_[n][*iface.master]) op.deps.push_back(*creator_[n][*iface.master]);
            }
            if ((iface.type == InterfaceType::tap || iface.type == InterfaceType::tun) && iface.mtu) op.mtu = iface.mtu;
            if (interface_should_be_up(n, i)) op.up = true;
            if (!op.up && !op.master && !op.mtu) continue;
        }
        if (creator_[n][i]) op.deps.push_back(*creator_[n][i]);
        if (qdisc[i]) op.deps.push_back(*qdisc[i]);
        std::size_t id = with_node(std::move(op));
        if (ops_[id].up) upper_[n][i] = id;
    }
    // vlans after their parents are up: a vlan made up on a down parent is ENETDOWN.
    for (std::size_t i = 0; i < node.interfaces.size(); ++i) {
        const Interface& iface = node.interfaces[i];
        if (iface.type != InterfaceType::vlan) continue;
        Op op;
        op.kind = OpKind::add_vlan;
        op.iface = i;
        op.ifindex = idx[i];
        op.up = interface_should_be_up(n, i);
        if (is_port(node, iface)) op.master = idx[*iface.master];
        for (auto x : {creator_[n][iface.parent], upper_[n][iface.parent]})
            if (x) op.deps.push_back(*x);
        std::size_t id = with_node(std::move(op));
        creator_[n][i] = id;
        if (*ops_[id].up) upper_[n][i] = id;
    }
    if (node.kind == NodeKind::switch_ && node.vlan_filtering) {
        for (std::size_t i = 0; i < node.interfaces.size(); ++i) {
            const Interface& iface = node.interfaces[i];
            if (!is_port(node, iface) || (!iface.pvid && iface.tagged.empty())) continue;
            Op op;
            op.kind = OpKind::bridge_vlans;
            op.iface = i;
            op.ifindex = idx[i];
            if (creator_[n][i]) op.deps.push_back(*creator_[n][i]);
            with_node(std::move(op));
        }
    }
    std::optional<std::size_t> sysctls;
    if (!node.sysctls.empty()) {
        Op op;
        op.kind = OpKind::write_sysctls;
        for (std::size_t i = 0; i < node.interfaces.size(); ++i)
            if (creator_[n][i]) op.deps.push_back(*creator_[n][i]);
        sysctls = with_node(std::move(op));
    }
    std::vector<std::size_t> addrs;
    for (std::size_t i = 0; i < node.interfaces.size(); ++i) {
        for (const auto& pfx : node.interfaces[i].addresses) {
            Op op;
            op.kind = OpKind::add_address;
            op.iface = i;
            op.ifindex = idx[i];
            op.prefix = pfx;
            for (auto x : {creator_[n][i], sysctls})
                if (x) op.deps.push_back(*x);
            addrs.push_back(with_node(std::move(op)));
        }
    }
    for (const auto& route : node.routes) {
        Op op;
        op.kind = OpKind::add_route;
        op.route = {route.family, route.to, route.via, route.dev ? idx[*route.dev] : 0, route.metric};
        op.deps = addrs;
        if (route.dev && creator_[n][*route.dev]) op.deps.push_back(*creator_[n][*route.dev]);
        with_node(std::move(op));
    }
}

void Builder::configure_kept(std::size_t n) {
    const Node& node = d_.nodes[n];
    const Node& was = built_->nodes[*in_built_[n]];
    const ObservedNode& on = *obs_[n];
    const auto& idx = p_.ifindex[n];
    auto with_node = [&](Op op) {
        op.node = n;
        std::size_t id = add(std::move(op));
        node_ops_[n].push_back(id);
        return id;
    };
    const bool was_stopped = o_.runtime.nodes_stopped.count(node.name) > 0;
    const bool stopped = rt_.nodes_stopped.count(node.name) > 0;
    if (stopped && !was_stopped) {
        change('~', "node", node.name, "stopped");
        Op op;
        op.kind = OpKind::stop_processes;
        op.name = node.name;
        op.all_processes = true;
        stop_op_of_[n] = add(std::move(op));
    }
    if (!stopped && was_stopped) {
        change('~', "node", node.name, "started");
        starting_[n] = true;
    }

    // Impairments: new links get theirs below, before they come up; kept links change in place.
    std::vector<std::optional<std::size_t>> qdisc(node.interfaces.size());
    for (std::size_t i = 0; i < node.interfaces.size(); ++i) {
        if (!is_link_end(node.interfaces[i])) continue;
        const std::size_t l = *node.interfaces[i].link;
        const Link& link = d_.links[l];
        const auto& want = want_impair_[l];
        {
            const LinkEnd& end = link.ends[node.interfaces[i].link_end];
            Impairment have;
            if (!new_end_[n][end.interface]) {
                const std::string& key = dkey_[l];
                auto it = o_.runtime.impaired.find(key);
                if (it != o_.runtime.impaired.end()) {
                    have = it->second;
                } else if (auto b = built_link_.find(key); b != built_link_.end()) {
                    have = built_->links[b->second].impair;
                }
            }
            if (have == want) continue;
            if (!new_end_[n][end.interface] && said_impair_.insert(l).second)
                change('~', "link", dkey_[l], impair_diff(have, want));
            Op op;
            op.kind = want.any() ? OpKind::replace_qdisc : OpKind::delete_qdisc;
            op.iface = end.interface;
            op.link = l;
            op.ifindex = idx[end.interface];
            op.impair = want;
            if (creator_[n][end.interface]) op.deps.push_back(*creator_[n][end.interface]);
            qdisc[end.interface] = with_node(std::move(op));
        }
    }

    std::vector<bool> stays_down(node.interfaces.size(), false);
    for (std::size_t i = 0; i < node.interfaces.size(); ++i) {
        const Interface& iface = node.interfaces[i];
        const bool want_up = interface_should_be_up(n, i);
        stays_down[i] = !want_up;
        const std::string target = node.name + ":" + iface.name;
        const ObservedInterface* oi = new_end_[n][i] ? nullptr : observed_if(n, iface.name);
        Op op;
        op.kind = OpKind::set_link;
        op.iface = i;
        op.ifindex = idx[i];
        if (new_end_[n][i]) {
            if (done_[n][i]) continue;
            if (is_port(node, iface)) op.master = idx[*iface.master];
            if (want_up) op.up = true;
            if (!op.up && !op.master) continue;
        } else {
            if (!on.dumped || !oi) continue;
            if (oi->admin_up != want_up) {
                op.up = want_up;
                const std::string end = node.name + ":" + iface.name;
                bool runtime_link = rt_.links_down.count(end) != o_.runtime.links_down.count(end);
                if (runtime_link && iface.link) {
                    change('~', "link", dkey_[*iface.link], std::string(want_up ? "up" : "down") + " (" + end + ")");
                } else if (stopped == was_stopped && !runtime_link) {
                    change('~', "interface", target, std::string("state ") + (want_up ? "down -> up" : "up -> down"));
                }
            }
            auto want_mtu = iface.mtu;
            if (!want_mtu && iface.type == InterfaceType::veth) want_mtu = 1500;
            if (want_mtu && *want_mtu != oi->mtu && iface.type != InterfaceType::loopback &&
                iface.type != InterfaceType::bridge) {
                op.mtu = want_mtu;
                change('~', "interface", target, "mtu " + std::to_string(oi->mtu) + " -> " + std::to_string(*want_mtu));
            }
            if (!op.up && !op.mtu) continue;
        }
        if (creator_[n][i]) op.deps.push_back(*creator_[n][i]);
        if (qdisc[i]) op.deps.push_back(*qdisc[i]);
        if (stop_op_of_[n] != SIZE_MAX) op.deps.push_back(stop_op_of_[n]);
        std::size_t id = with_node(std::move(op));
        if (ops_[id].up.value_or(false)) upper_[n][i] = id;
    }

    if (node.sysctls != was.sysctls) {
        change('~', "sysctls", node.name, "written again");
        Op op;
        op.kind = OpKind::write_sysctls;
        with_node(std::move(op));
    }

    // Addresses: what the kernel has against the file. An interface that stays down keeps
    // its IPv4 addresses; the kernel drops IPv6 ones on admin down, and they come back
    // with the interface.
    for (std::size_t i = 0; i < node.interfaces.size(); ++i) {
        const Interface& iface = node.interfaces[i];
        const ObservedInterface* oi = new_end_[n][i] ? nullptr : observed_if(n, iface.name);
        if (!new_end_[n][i] && (!on.dumped || !oi)) continue;
        std::string plus, minus;
        if (oi) {
            for (const auto& have : oi->addresses) {
                if (kernel_default_address(iface, have)) continue;
                if (std::find(iface.addresses.begin(), iface.addresses.end(), have) != iface.addresses.end()) continue;
                Op op;
                op.kind = OpKind::delete_address;
                op.iface = i;
                op.ifindex = idx[i];
                op.prefix = have;
                with_node(std::move(op));
                minus += " -" + have.to_string();
            }
        }
        for (const auto& want : iface.addresses) {
            if (oi && std::find(oi->addresses.begin(), oi->addresses.end(), want) != oi->addresses.end()) continue;
            if (stays_down[i] && want.address.family == AF_INET6) continue;
            Op op;
            op.kind = OpKind::add_address;
            op.iface = i;
            op.ifindex = idx[i];
            op.prefix = want;
            for (auto x : {creator_[n][i], upper_[n][i]})
                if (x) op.deps.push_back(*x);
            with_node(std::move(op));
            plus += " +" + want.to_string();
        }
        // New link ends are said by "+ link"; an interface coming back up gets its IPv6
        // addresses again as part of that change, not as a change of its own.
        bool quiet = new_end_[n][i] || (upper_[n][i] && minus.empty());
        if (!quiet && !(plus + minus).empty())
            change('~', "interface", node.name + ":" + iface.name, "addresses" + plus + minus);
    }
    routes_kept(n, stays_down);
    // env and user are how the node's commands run: a change runs them again.
    const bool how_changed = node.env != was.env || node.user != was.user;
    if ((node.exec != was.exec || (how_changed && !node.exec.empty())) && !stopped) {
        change('~', "exec", node.name, "run again");
        rerun_exec_[n] = true;
    }
    if ((node.daemons != was.daemons || (how_changed && !node.daemons.empty())) && !stopped && !starting_[n]) {
        change('~', "daemons", node.name, "restarted");
        restart_daemons_[n] = true;
        if (stop_op_of_[n] == SIZE_MAX) {
            Op op;
            op.kind = OpKind::stop_processes;
            op.name = node.name;
            stop_op_of_[n] = add(std::move(op));
        }
    }
}

void Builder::routes_kept(std::size_t n, const std::vector<bool>& stays_down) {
    const Node& node = d_.nodes[n];
    const ObservedNode& on = *obs_[n];
    const auto& idx = p_.ifindex[n];
    if (!on.dumped) return;
    // The interface a route leaves through: its dev, else the one whose prefix holds the
    // gateway.
    auto through = [&](const Route& r) -> std::optional<std::size_t> {
        if (r.dev) return r.dev;
        if (!r.via) return std::nullopt;
        for (std::size_t i = 0; i < node.interfaces.size(); ++i)
            for (const auto& p : node.interfaces[i].addresses)
                if (p.address.family == r.via->family && p.contains(*r.via)) return i;
        return std::nullopt;
    };
    auto matches = [&](const Route& r, const ObservedRoute& x) {
        return x.family == r.family && x.dst == r.to && x.via == r.via &&
            x.metric == r.metric.value_or(default_metric(r.family)) && (!r.dev || x.oif == idx[*r.dev]);
    };
    // Partly read: only routes through the interfaces read are compared.
    auto read_oif = [&](int oif) {
        if (!on.partial) return true;
        for (const auto& oi : on.interfaces)
            if (oi.ifindex == oif) return true;
        return false;
    };
    std::string plus, minus;
    for (const auto& x : on.routes) {
        if (!read_oif(x.oif)) continue;
        bool wanted =
            std::any_of(node.routes.begin(), node.routes.end(), [&](const Route& r) { return matches(r, x); });
        if (wanted) continue;
        // A route through an interface that stays down is the kernel's business (it
        // flags it linkdown or drops it); it is not removed by hand.
        bool via_down = false;
        for (std::size_t i = 0; i < node.interfaces.size(); ++i)
            if (stays_down[i] && x.oif == idx[i]) via_down = true;
        if (via_down) continue;
        Op op;
        op.kind = OpKind::delete_route;
        op.route = {x.family, x.dst, x.via, x.oif, x.metric};
        Op& added = ops_[add(std::move(op))];
        added.node = n;
        minus += " -" + route_text(added.route, &node, &idx);
    }
    std::vector<std::size_t> addr_ops;
    for (auto id : node_ops_[n])
        if (ops_[id].kind == OpKind::add_address || ops_[id].kind == OpKind::set_link) addr_ops.push_back(id);
    // Interfaces losing an address this plan: the kernel drops routes whose gateway was
    // reachable through it, so those routes are added again (they may also have stayed).
    std::vector<bool> readdress(node.interfaces.size(), false);
    for (auto id : node_ops_[n])
        if (ops_[id].kind == OpKind::delete_address) readdress[ops_[id].iface] = true;
    for (const auto& r : node.routes) {
        auto i = through(r);
        if (i && stays_down[*i]) continue;
        if (on.partial && (!i || !on.covers(node.interfaces[*i].name))) continue;
        bool have =
            std::any_of(on.routes.begin(), on.routes.end(), [&](const ObservedRoute& x) { return matches(r, x); });
        bool again = have && i && readdress[*i];
        if (have && !again) continue;
        Op op;
        op.kind = OpKind::add_route;
        op.route = {r.family, r.to, r.via, r.dev ? idx[*r.dev] : 0, r.metric};
        op.deps = addr_ops;
        op.may_exist = again;
        std::size_t id = add(std::move(op));
        ops_[id].node = n;
        node_ops_[n].push_back(id);
        // A route back with its interface (up again, or readdressed) is part of that change.
        if (!again && !(i && upper_[n][*i])) plus += " +" + route_text(ops_[id].route, &node, &idx);
    }
    if (!(plus + minus).empty()) change('~', "routes", node.name, (plus + minus).substr(1));
}


}  // namespace labctl::plan::detail
