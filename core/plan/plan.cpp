#include "plan/plan.hpp"

#include <algorithm>
#include <numeric>

#include "plan/builder.hpp"

namespace labctl::plan {

namespace detail {

Plan Builder::finish() {
    // Operations in stage order, each stage in the order planned; deps follow.
    std::vector<std::size_t> order(ops_.size());
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(),
                     [&](std::size_t a, std::size_t b) { return stage_of(ops_[a].kind) < stage_of(ops_[b].kind); });
    std::vector<std::size_t> where(ops_.size());
    for (std::size_t i = 0; i < order.size(); ++i) where[order[i]] = i;
    // Permuted in place, cycle by cycle: a second vector of every op would double the
    // plan's peak memory (a 10,000-node lab plans over 100,000 ops).
    std::vector<bool> placed(ops_.size(), false);
    for (std::size_t i = 0; i < ops_.size(); ++i) {
        if (placed[i]) continue;
        Op first = std::move(ops_[i]);
        std::size_t j = i;
        for (;;) {
            placed[j] = true;
            const std::size_t from = order[j];
            if (from == i) {
                ops_[j] = std::move(first);
                break;
            }
            ops_[j] = std::move(ops_[from]);
            j = from;
        }
    }
    for (auto& op : ops_) {
        for (auto& d : op.deps) d = where[d];
        std::sort(op.deps.begin(), op.deps.end());
        op.deps.erase(std::unique(op.deps.begin(), op.deps.end()), op.deps.end());
    }
    p_.ops = std::move(ops_);
    return std::move(p_);
}

Plan Builder::build() {
    n_ = d_.nodes.size();
    classify_nodes();
    remove_nodes();
    plan_links();
    // Devices of fresh nodes before their veths (a main end is born enslaved to its bridge).
    // plan_links ran first only to choose indexes; bridge ids are patched in below.
    for (std::size_t n = 0; n < n_; ++n)
        if (p_.created[n]) devices_of_fresh(n);
    for (auto& op : ops_) {
        if (op.kind != OpKind::add_veth || !op.master) continue;
        const Interface& ia = d_.nodes[op.node].interfaces[op.iface];
        if (auto c = creator_[op.node][*ia.master]) op.deps.push_back(*c);
    }
    for (std::size_t n = 0; n < n_; ++n) {
        if (p_.created[n]) configure_fresh(n);
        else configure_kept(n);
    }
    wait_and_finish();
    processes();
    return finish();
}

}  // namespace detail

using namespace detail;

std::string link_key(const Topology& topo, const Link& link) {
    return topo.end_name(link.ends[0]) + " <-> " + topo.end_name(link.ends[1]);
}

std::optional<std::size_t> find_link(const Topology& topo, const std::string& end) {
    for (std::size_t l = 0; l < topo.links.size(); ++l)
        for (const auto& e : topo.links[l].ends)
            if (topo.end_name(e) == end) return l;
    return std::nullopt;
}

const ObservedInterface* ObservedNode::find(const std::string& ifname) const {
    for (const auto& i : interfaces)
        if (i.name == ifname) return &i;
    return nullptr;
}

bool ObservedNode::covers(const std::string& ifname) const {
    return dumped && (!partial || std::find(asked.begin(), asked.end(), ifname) != asked.end());
}

const ObservedNode* Observed::find(const std::string& node) const {
    for (const auto& n : nodes)
        if (n.name == node) return &n;
    return nullptr;
}


Plan plan(const Topology& desired, const Observed& observed, const Runtime& runtime) {
    return Builder(desired, observed, runtime).build();
}

}  // namespace labctl::plan
