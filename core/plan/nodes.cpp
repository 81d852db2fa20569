#include "plan/builder.hpp"

#include <algorithm>

namespace labctl::plan::detail {

bool Builder::interface_should_be_up(std::size_t n, std::size_t i) const {
    const Node& node = d_.nodes[n];
    const Interface& iface = node.interfaces[i];
    if (iface.type == InterfaceType::loopback) return true;
    if (!iface.up || rt_.nodes_stopped.count(node.name)) return false;
    if (rt_.links_down.count(node.name + ":" + iface.name)) return false;
    if (iface.type == InterfaceType::vlan) return interface_should_be_up(n, iface.parent);
    return true;
}

void Builder::classify_nodes() {
    obs_.assign(n_, nullptr);
    in_built_.assign(n_, std::nullopt);
    keep_.assign(n_, false);
    obs_if_.assign(n_, {});
    for (std::size_t n = 0; n < n_; ++n) desired_node_.emplace(d_.nodes[n].name, n);
    for (std::size_t l = 0; l < d_.links.size(); ++l) {
        dkey_.push_back(link_key(d_, d_.links[l]));
        desired_link_.emplace(dkey_.back(), l);
        want_impair_.push_back(impair_in_force(dkey_.back(), d_.links[l], rt_));
    }
    if (built_) {
        for (std::size_t n = 0; n < built_->nodes.size(); ++n) built_node_.emplace(built_->nodes[n].name, n);
        for (std::size_t l = 0; l < built_->links.size(); ++l)
            built_link_.emplace(link_key(*built_, built_->links[l]), l);
    }
    for (const auto& on : o_.nodes) {
        auto n = desired_node(on.name);
        if (!n || obs_[*n]) continue;
        obs_[*n] = &on;
        for (const auto& i : on.interfaces) obs_if_[*n].emplace(i.name, &i);
    }
    for (std::size_t n = 0; n < n_; ++n) {
        const Node& node = d_.nodes[n];
        if (auto b = built_node_.find(node.name); b != built_node_.end()) in_built_[n] = b->second;
        if (!obs_[n] || !obs_[n]->present || !in_built_[n]) continue;
        const Node& was = built_->nodes[*in_built_[n]];
        if (was.netns != node.netns || node_shape(was) != node_shape(node)) continue;
        bool all_there = true;
        for (const auto& i : node.interfaces)
            if (!is_link_end(i) && obs_[n]->covers(i.name) && !observed_if(n, i.name)) all_there = false;
        keep_[n] = all_there;
    }
    for (const auto& on : o_.nodes)
        for (const auto& i : on.interfaces) next_ifindex_ = std::max(next_ifindex_, i.ifindex + 1);

    p_.ifindex.assign(n_, {});
    p_.created.assign(n_, false);
    netns_op_.assign(n_, std::nullopt);
    creator_.assign(n_, {});
    upper_.assign(n_, {});
    done_.assign(n_, {});
    new_end_.assign(n_, {});
    node_ops_.assign(n_, {});
    stop_op_of_.assign(n_, SIZE_MAX);
    restart_daemons_.assign(n_, false);
    rerun_exec_.assign(n_, false);
    starting_.assign(n_, false);
    for (std::size_t n = 0; n < n_; ++n) {
        const Node& node = d_.nodes[n];
        const std::size_t k = node.interfaces.size();
        p_.ifindex[n].assign(k, 0);
        creator_[n].assign(k, std::nullopt);
        upper_[n].assign(k, std::nullopt);
        done_[n].assign(k, false);
        new_end_[n].assign(k, false);
        for (std::size_t i = 0; i < k; ++i) {
            const Interface& iface = node.interfaces[i];
            if (keep_[n]) {
                if (const auto* oi = observed_if(n, iface.name)) p_.ifindex[n][i] = oi->ifindex;
            } else if (iface.type == InterfaceType::loopback) {
                p_.ifindex[n][i] = 1;
            } else {
                p_.ifindex[n][i] = next_ifindex_++;  // TUN/TAP too (TUNSETIFINDEX)
            }
        }
        if (keep_[n]) continue;
        p_.created[n] = true;
        Op op;
        op.kind = OpKind::create_netns;
        op.node = n;
        op.name = node.netns;
        netns_op_[n] = add(std::move(op));
        for (std::size_t i = 0; i < k; ++i)
            if (node.interfaces[i].type == InterfaceType::tap || node.interfaces[i].type == InterfaceType::tun ||
                node.interfaces[i].type == InterfaceType::loopback)
                creator_[n][i] = netns_op_[n];
        if (!built_ || !in_built_[n]) {
            change('+', "node", node.name);
        } else if (!obs_[n] || !obs_[n]->present) {
            change('~', "node", node.name, "recreated (its namespace is missing)");
        } else {
            change('~', "node", node.name, "replaced");
        }
    }
}

void Builder::remove_nodes() {
    // Every namespace the journal records that the desired lab does not keep goes, its
    // processes first (a process inside keeps a namespace alive).
    for (const auto& on : o_.nodes) {
        if (!on.present && !on.leftover) continue;
        auto n = desired_node(on.name);
        if (n && keep_[*n]) continue;
        Op stop;
        stop.kind = OpKind::stop_processes;
        stop.name = on.name;
        stop.all_processes = true;
        std::size_t s = add(std::move(stop));
        Op del;
        del.kind = OpKind::delete_netns;
        auto b = built_node_.find(on.name);
        del.name = b != built_node_.end() ? built_->nodes[b->second].netns : d_.name + "-" + on.name;
        if (n) del.name = d_.nodes[*n].netns;
        del.deps = {s};
        std::size_t x = add(std::move(del));
        if (n && netns_op_[*n]) ops_[*netns_op_[*n]].deps.push_back(x);
        if (!n && !on.leftover) change('-', "node", on.name);
    }
}

void Builder::devices_of_fresh(std::size_t n) {
    const Node& node = d_.nodes[n];
    for (std::size_t i = 0; i < node.interfaces.size(); ++i) {
        const Interface& iface = node.interfaces[i];
        if (iface.type != InterfaceType::bridge && iface.type != InterfaceType::dummy) continue;
        Op op;
        op.kind = iface.type == InterfaceType::bridge ? OpKind::add_bridge : OpKind::add_dummy;
        op.node = n;
        op.iface = i;
        op.ifindex = p_.ifindex[n][i];
        op.up = iface.type == InterfaceType::bridge && interface_should_be_up(n, i);
        op.deps = {*netns_op_[n]};
        creator_[n][i] = add(std::move(op));
        if (iface.type == InterfaceType::bridge && *ops_[*creator_[n][i]].up) upper_[n][i] = creator_[n][i];
    }
}


}  // namespace labctl::plan::detail
