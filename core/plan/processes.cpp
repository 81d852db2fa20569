#include "plan/builder.hpp"

#include <algorithm>

namespace labctl::plan::detail {

void Builder::processes() {
    for (std::size_t n = 0; n < n_; ++n) {
        const Node& node = d_.nodes[n];
        if (rt_.nodes_stopped.count(node.name)) continue;
        const bool fresh = p_.created[n];
        if (!node.exec.empty() && (fresh || rerun_exec_[n] || starting_[n])) {
            Op op;
            op.kind = OpKind::run_exec;
            op.node = n;
            op.deps = node_ops_[n];
            std::size_t id = add(std::move(op));
            node_ops_[n].push_back(id);
        }
        if (!node.daemons.empty() && (fresh || restart_daemons_[n] || starting_[n])) {
            Op op;
            op.kind = OpKind::start_daemons;
            op.node = n;
            op.deps = node_ops_[n];
            if (stop_op_of_[n] != SIZE_MAX) op.deps.push_back(stop_op_of_[n]);
            add(std::move(op));
        }
    }
}

void Builder::wait_and_finish() {
    // A link is up when both ends are: wait for every end this plan brings up whose
    // peer is (or will be) up too.
    for (std::size_t n = 0; n < n_; ++n) {
        const Node& node = d_.nodes[n];
        for (std::size_t i = 0; i < node.interfaces.size(); ++i) {
            const Interface& iface = node.interfaces[i];
            if (iface.type != InterfaceType::veth || !iface.link) continue;
            const Link& link = d_.links[*iface.link];
            const LinkEnd& other = link.ends[1 - iface.link_end];
            if (!interface_should_be_up(n, i) || !interface_should_be_up(other.node, other.interface)) continue;
            auto mine = upper_[n][i], theirs = upper_[other.node][other.interface];
            if ((!mine && !theirs) || p_.ifindex[n][i] == 0) continue;  // 0: a node not dumped
            wait_.push_back({n, p_.ifindex[n][i]});
            for (auto x : {mine, theirs})
                if (x) wait_deps_.push_back(*x);
        }
    }
    std::optional<std::size_t> waited;
    if (!wait_.empty()) {
        Op op;
        op.kind = OpKind::wait_links;
        op.wait = wait_;
        std::sort(wait_deps_.begin(), wait_deps_.end());
        wait_deps_.erase(std::unique(wait_deps_.begin(), wait_deps_.end()), wait_deps_.end());
        op.deps = wait_deps_;
        waited = add(std::move(op));
    }
    for (std::size_t n = 0; n < n_; ++n) {
        if (!p_.created[n]) continue;
        const Node& node = d_.nodes[n];
        for (std::size_t i = 0; i < node.interfaces.size(); ++i) {
            if (node.interfaces[i].type != InterfaceType::bridge) continue;
            Op op;
            op.kind = OpKind::finish_bridges;
            op.node = n;
            op.iface = i;
            op.ifindex = p_.ifindex[n][i];
            if (waited) op.deps.push_back(*waited);
            if (creator_[n][i]) op.deps.push_back(*creator_[n][i]);
            std::size_t id = add(std::move(op));
            node_ops_[n].push_back(id);
        }
        if (waited) node_ops_[n].push_back(*waited);
    }
    if (waited)
        for (std::size_t n = 0; n < n_; ++n)
            if (!p_.created[n] && !node_ops_[n].empty()) node_ops_[n].push_back(*waited);
}


}  // namespace labctl::plan::detail
