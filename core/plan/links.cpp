#include "plan/builder.hpp"

namespace labctl::plan::detail {

void Builder::plan_links() {
    link_count_.assign(n_, 0);
    for (const auto& link : d_.links) {
        ++link_count_[link.ends[0].node];
        ++link_count_[link.ends[1].node];
    }
    std::vector<std::vector<bool>> freed(n_);  // kept node ends whose old pair is deleted
    for (std::size_t n = 0; n < n_; ++n) freed[n].assign(d_.nodes[n].interfaces.size(), false);
    std::vector<std::size_t> delete_ops;
    std::set<std::pair<std::size_t, int>> deleted;
    auto delete_end = [&](std::size_t n, const std::string& ifname) -> void {
        const auto* oi = observed_if(n, ifname);
        if (!oi) return;
        if (!deleted.insert({n, oi->ifindex}).second) return;
        if (auto i = d_.nodes[n].find_interface(ifname)) freed[n][*i] = true;
        Op op;
        op.kind = OpKind::delete_link;
        op.node = n;
        op.name = ifname;
        op.ifindex = oi->ifindex;
        delete_ops.push_back(add(std::move(op)));
    };

    // Links of the built lab between kept nodes that the desired lab does not keep.
    std::vector<bool> kept_link(d_.links.size(), false);
    for (std::size_t l = 0; l < d_.links.size(); ++l) {
        const Link& link = d_.links[l];
        const auto a = link.ends[0].node, b = link.ends[1].node;
        if (!keep_[a] || !keep_[b] || !built_) continue;
        const std::string& key = dkey_[l];
        auto found = built_link_.find(key);
        if (found == built_link_.end()) continue;
        const Link& bl = built_->links[found->second];
        bool there = true;
        for (const auto& end : link.ends)
            if (obs_[end.node]->covers(d_.interface(end).name) && !observed_if(end.node, d_.interface(end).name))
                there = false;
        kept_link[l] = there && link_shape(*built_, bl) == link_shape(d_, link);
        if (!kept_link[l]) change('~', "link", key, there ? "recreated" : "recreated (an end was missing)");
    }
    if (built_) {
        for (const auto& bl : built_->links) {
            const std::string key = link_key(*built_, bl);
            auto listed = desired_link_.find(key);
            if (listed != desired_link_.end() && kept_link[listed->second]) continue;
            if (listed == desired_link_.end()) change('-', "link", key);
            // Deleting one end of a veth deletes both. A removed or replaced node takes its
            // ends with its namespace, but the kernel frees a namespace later: the peer in
            // a kept node is deleted now, so its name is free and gone when we return.
            {
                bool both_kept = true;
                for (const auto& end : bl.ends) {
                    auto n = desired_node(built_->nodes[end.node].name);
                    if (!n || !keep_[*n]) both_kept = false;
                }
                if (!both_kept) {
                    for (const auto& end : bl.ends) {
                        auto n = desired_node(built_->nodes[end.node].name);
                        if (n && keep_[*n]) delete_end(*n, built_->interface(end).name);
                    }
                    goto next_link;
                }
            }
            for (const auto& end : bl.ends) {
                auto n = *desired_node(built_->nodes[end.node].name);
                if (observed_if(n, built_->interface(end).name)) {
                    delete_end(n, built_->interface(end).name);
                    break;
                }
            }
            for (const auto& end : bl.ends) {  // the peer goes with it
                auto n = *desired_node(built_->nodes[end.node].name);
                if (const auto* oi = observed_if(n, built_->interface(end).name)) deleted.insert({n, oi->ifindex});
            }
        next_link:;
        }
    }

    // Interfaces of kept nodes that the file does not name (what a failed or killed run
    // made, or a hand-made one): ours are numbered from kFirstIfindex, devices the kernel
    // makes itself in every namespace (lo, fallback tunnels) below it.
    for (std::size_t n = 0; n < n_; ++n) {
        if (!keep_[n] || !obs_[n]->dumped || obs_[n]->partial) continue;
        for (const auto& oi : obs_[n]->interfaces) {
            if (oi.ifindex < kFirstIfindex || d_.nodes[n].find_interface(oi.name)) continue;
            if (deleted.count({n, oi.ifindex})) continue;
            change('-', "interface", d_.nodes[n].name + ":" + oi.name);
            delete_end(n, oi.name);
        }
    }

    // New links: each pair made in one request from the namespace of its main end.
    for (std::size_t l = 0; l < d_.links.size(); ++l) {
        if (kept_link[l]) continue;
        const Link& link = d_.links[l];
        const std::string& key = dkey_[l];
        const bool was_built = built_link_.count(key) > 0;
        if (!was_built) change('+', "link", key);
        // A link of a replaced node comes back with it (between kept nodes it was said above).
        else if (!keep_[link.ends[0].node] || !keep_[link.ends[1].node]) change('~', "link", key, "recreated");
        for (const auto& end : link.ends) {
            new_end_[end.node][end.interface] = true;
            if (keep_[end.node]) {
                delete_end(end.node, d_.interface(end).name);  // a leftover of the same name
                p_.ifindex[end.node][end.interface] = next_ifindex_++;
            }
        }
        const int m = link_count_[link.ends[1].node] > link_count_[link.ends[0].node] ? 1 : 0;
        const LinkEnd& a = link.ends[m];
        const LinkEnd& b = link.ends[1 - m];
        const Node& na = d_.nodes[a.node];
        const Interface& ia = d_.interface(a);
        Op op;
        op.kind = OpKind::add_veth;
        op.node = a.node;
        op.link = l;
        op.iface = a.interface;
        op.ifindex = p_.ifindex[a.node][a.interface];
        op.up = ia.up && interface_should_be_up(a.node, a.interface) && !want_impair_[l].any();
        if (is_port(na, ia)) {
            op.master = p_.ifindex[a.node][*ia.master];
            if (creator_[a.node][*ia.master]) op.deps.push_back(*creator_[a.node][*ia.master]);
        }
        for (const auto& end : link.ends)
            if (netns_op_[end.node]) op.deps.push_back(*netns_op_[end.node]);
        for (auto x : delete_ops) op.deps.push_back(x);
        std::size_t id = add(std::move(op));
        creator_[a.node][a.interface] = id;
        creator_[b.node][b.interface] = id;
        if (*ops_[id].up) {
            done_[a.node][a.interface] = true;
            upper_[a.node][a.interface] = id;
        }
    }
}


}  // namespace labctl::plan::detail
