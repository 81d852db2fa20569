#include "plan/plan.hpp"

#include <algorithm>
#include <cstdio>
#include <numeric>
#include <unordered_map>

namespace labctl::plan {

namespace {

using namespace topology;

std::string num(double v) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%g", v);
    return buf;
}

bool is_port(const Node& node, const Interface& iface) {
    return iface.master.has_value() && node.interfaces[*iface.master].type == InterfaceType::bridge;
}

bool is_link_end(const Interface& iface) { return iface.type == InterfaceType::veth && iface.link.has_value(); }

// What the plan can change only by making an interface again.
std::string iface_shape(const Node& node, const Interface& i) {
    std::string s = i.name + "|" + to_string(i.type);
    if (i.mac) s += "|mac " + mac_to_string(*i.mac);
    if (i.owner) s += "|owner " + std::to_string(*i.owner);
    if (i.group) s += "|group " + std::to_string(*i.group);
    if (i.type == InterfaceType::vlan)
        s += "|vlan " + node.interfaces[i.parent].name + "." + std::to_string(i.vlan_id);
    if (i.master) s += "|master " + node.interfaces[*i.master].name;
    if (i.pvid) s += "|pvid " + std::to_string(*i.pvid);
    for (auto v : i.tagged) s += "|tagged " + std::to_string(v);
    return s;
}

// What the plan can change only by making the node again: its kind and every interface
// that is not a link end (those belong to their links).
std::string node_shape(const Node& n) {
    std::string s = std::string(to_string(n.kind)) + (n.vlan_filtering ? "|vlan_filtering" : "");
    for (const auto& i : n.interfaces)
        if (!is_link_end(i)) s += ";" + iface_shape(n, i);
    return s;
}

std::string link_shape(const Topology& t, const Link& l) {
    return iface_shape(t.nodes[l.ends[0].node], t.interface(l.ends[0])) + "<->" +
           iface_shape(t.nodes[l.ends[1].node], t.interface(l.ends[1]));
}

bool same_impair(const Impairment& a, const Impairment& b) {
    return a.delay_ms == b.delay_ms && a.jitter_ms == b.jitter_ms && a.loss_pct == b.loss_pct &&
           a.rate_mbit == b.rate_mbit && a.duplicate_pct == b.duplicate_pct && a.reorder_pct == b.reorder_pct;
}

// "impair delay_ms 10 -> 50 loss_pct none -> 5"
std::string impair_diff(const Impairment& from, const Impairment& to) {
    std::string s = "impair";
    auto field = [&](const char* name, const std::optional<double>& a, const std::optional<double>& b) {
        if (a == b) return;
        s += std::string(" ") + name + " " + (a ? num(*a) : "none") + " -> " + (b ? num(*b) : "none");
    };
    field("delay_ms", from.delay_ms, to.delay_ms);
    field("jitter_ms", from.jitter_ms, to.jitter_ms);
    field("loss_pct", from.loss_pct, to.loss_pct);
    field("rate_mbit", from.rate_mbit, to.rate_mbit);
    field("duplicate_pct", from.duplicate_pct, to.duplicate_pct);
    field("reorder_pct", from.reorder_pct, to.reorder_pct);
    return s;
}

Impairment impair_in_force(const std::string& key, const Link& l, const Runtime& rt) {
    if (rt.impaired.empty()) return l.impair;
    auto it = rt.impaired.find(key);
    return it == rt.impaired.end() ? l.impair : it->second;
}

// Addresses the kernel gives every namespace's lo itself: never removed by a plan.
bool kernel_default_address(const Interface& iface, const IpPrefix& p) {
    if (iface.type != InterfaceType::loopback) return false;
    return p.to_string() == "127.0.0.1/8" || p.to_string() == "::1/128";
}

std::uint32_t default_metric(int family) { return family == AF_INET6 ? 1024 : 0; }

std::string route_text(const RouteSpec& r, const Node* node, const std::vector<int>* ifindex) {
    std::string text = r.dst ? r.dst->to_string() : (r.family == AF_INET6 ? "default (IPv6)" : "default");
    if (r.via) text += " via " + r.via->to_string();
    if (r.oif && node && ifindex) {
        for (std::size_t i = 0; i < ifindex->size(); ++i)
            if ((*ifindex)[i] == r.oif) text += " dev " + node->interfaces[i].name;
    }
    if (r.metric) text += " metric " + std::to_string(*r.metric);
    return text;
}

// Builds a Plan: operations are collected per stage, then concatenated.
class Builder {
public:
    Builder(const Topology& desired, const Observed& observed, const Runtime& runtime)
        : d_(desired), o_(observed), rt_(runtime), built_(observed.built ? &*observed.built : nullptr) {}

    Plan build();

private:
    // Adds an operation; returns its id (stable across the final reordering).
    std::size_t add(Op op) {
        ops_.push_back(std::move(op));
        return ops_.size() - 1;
    }
    void change(char op, std::string kind, std::string target, std::string detail = {}) {
        p_.changes.push_back({op, std::move(kind), std::move(target), std::move(detail)});
    }
    bool interface_should_be_up(std::size_t n, std::size_t i) const;
    void classify_nodes();
    void remove_nodes();
    void plan_links();
    void devices_of_fresh(std::size_t n);
    void configure_fresh(std::size_t n);
    void configure_kept(std::size_t n);
    void routes_kept(std::size_t n, const std::vector<bool>& stays_down);
    void processes();
    void wait_and_finish();
    Plan finish();

    const Topology& d_;
    const Observed& o_;
    const Runtime& rt_;
    const Topology* built_;
    Plan p_;
    std::vector<Op> ops_;
    std::size_t n_ = 0;
    std::vector<const ObservedNode*> obs_;             // by desired node
    std::vector<std::optional<std::size_t>> in_built_;  // by desired node
    std::vector<bool> keep_;                            // kept as it is (same namespace)
    std::vector<std::optional<std::size_t>> netns_op_;  // create_netns op of fresh nodes
    std::vector<std::vector<std::optional<std::size_t>>> creator_;  // [node][iface] op making it
    std::vector<std::vector<std::optional<std::size_t>>> upper_;    // [node][iface] op setting it up
    std::vector<std::vector<bool>> done_;               // veth main ends made up and enslaved
    std::vector<std::vector<bool>> new_end_;            // ends of links this plan makes
    std::vector<std::vector<std::size_t>> node_ops_;    // configure ops per node (deps of exec)
    std::vector<std::size_t> stop_op_of_;               // per desired node, SIZE_MAX: none
    std::vector<std::pair<std::size_t, int>> wait_;     // ends to wait for
    std::vector<std::size_t> wait_deps_;
    std::vector<std::size_t> link_count_;
    std::vector<bool> restart_daemons_, rerun_exec_, starting_;
    std::set<std::size_t> said_impair_;                 // links whose impairment change was said
    // Indexes, so that planning a lab of N nodes is O(N), not O(N^2).
    std::vector<std::string> dkey_;                              // desired link keys
    std::vector<Impairment> want_impair_;                        // by desired link
    std::unordered_map<std::string, std::size_t> built_link_;   // key -> built link
    std::unordered_map<std::string, std::size_t> desired_link_; // key -> desired link
    std::unordered_map<std::string, std::size_t> desired_node_, built_node_;
    std::vector<std::unordered_map<std::string, const ObservedInterface*>> obs_if_;  // by desired node
    const ObservedInterface* observed_if(std::size_t n, const std::string& ifname) const {
        auto it = obs_if_[n].find(ifname);
        return it == obs_if_[n].end() ? nullptr : it->second;
    }
    std::optional<std::size_t> desired_node(const std::string& name) const {
        auto it = desired_node_.find(name);
        return it == desired_node_.end() ? std::nullopt : std::optional<std::size_t>(it->second);
    }
    int next_ifindex_ = kFirstIfindex;
};

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
        for (std::size_t l = 0; l < built_->links.size(); ++l) built_link_.emplace(link_key(*built_, built_->links[l]), l);
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
            if (same_impair(have, want)) continue;
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
                    change('~', "link", dkey_[*iface.link],
                           std::string(want_up ? "up" : "down") + " (" + end + ")");
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
        bool wanted = std::any_of(node.routes.begin(), node.routes.end(), [&](const Route& r) { return matches(r, x); });
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
        bool have = std::any_of(on.routes.begin(), on.routes.end(), [&](const ObservedRoute& x) { return matches(r, x); });
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

Plan Builder::finish() {
    // Operations in stage order, each stage in the order planned; deps follow.
    std::vector<std::size_t> order(ops_.size());
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) {
        return stage_of(ops_[a].kind) < stage_of(ops_[b].kind);
    });
    std::vector<std::size_t> where(ops_.size());
    for (std::size_t i = 0; i < order.size(); ++i) where[order[i]] = i;
    p_.ops.reserve(ops_.size());
    for (auto id : order) {
        Op op = std::move(ops_[id]);
        for (auto& d : op.deps) d = where[d];
        std::sort(op.deps.begin(), op.deps.end());
        op.deps.erase(std::unique(op.deps.begin(), op.deps.end()), op.deps.end());
        p_.ops.push_back(std::move(op));
    }
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

}  // namespace

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
        case OpKind::stop_processes: return op.name + ": stopping " + (op.all_processes ? "its processes" : "its daemons");
        case OpKind::delete_netns: return "removing namespace " + op.name;
        case OpKind::delete_link: return node().name + ": deleting " + op.name;
        case OpKind::delete_address: return node().name + ": removing " + op.prefix.to_string() + " from " + ifname();
        case OpKind::delete_route: return node().name + ": removing route " + route_text(op.route, &node(), &ifindex.at(op.node));
        case OpKind::delete_qdisc: return node().name + ": removing the impairment of " + ifname();
        case OpKind::create_netns: return "creating namespace " + node().netns;
        case OpKind::add_bridge: return node().name + ": creating bridge " + ifname();
        case OpKind::add_dummy: return node().name + ": creating dummy " + ifname();
        case OpKind::add_veth: {
            const Link& l = desired.links.at(op.link);
            return node().name + ": creating veth " + desired.end_name(l.ends[0]) + " <-> " + desired.end_name(l.ends[1]);
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
        case OpKind::add_route: return node().name + ": adding route " + route_text(op.route, &node(), &ifindex.at(op.node));
        case OpKind::wait_links: return "waiting for " + std::to_string(op.wait.size()) + " link ends to come up";
        case OpKind::finish_bridges: return node().name + ": turning on multicast snooping on " + ifname();
        case OpKind::run_exec: return node().name + ": running exec commands";
        case OpKind::start_daemons: return node().name + ": starting daemons";
    }
    return "?";
}

Plan plan(const Topology& desired, const Observed& observed, const Runtime& runtime) {
    return Builder(desired, observed, runtime).build();
}

}  // namespace labctl::plan
