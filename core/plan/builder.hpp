#pragma once
// Internal to plan/: the Builder that computes a Plan (plan::plan, plan.hpp) and the
// helpers its parts share, one file per concern:
//   plan.cpp        plan(), the Builder's build() and finish(); link keys, observed look-ups
//   compare.cpp     what is compared (shapes, impairments, default routes) and route text
//   nodes.cpp       classifying nodes (kept or made again), removing nodes, fresh devices
//   links.cpp       links: kept, deleted, made
//   configure.cpp   configuring fresh and kept nodes, routes of kept nodes
//   processes.cpp   waiting for links, finishing bridges, exec commands and daemons
//   describe.cpp    to_string, stage_of, Change::line, Plan::describe

#include <cstddef>
#include <cstdint>
#include <optional>
#include <set>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "plan/plan.hpp"

namespace labctl::plan::detail {

using namespace topology;

// compare.cpp: what is compared and how a route is said (each commented there).
std::string num(double v);
bool is_port(const Node& node, const Interface& iface);
bool is_link_end(const Interface& iface);
std::string iface_shape(const Node& node, const Interface& i);
std::string node_shape(const Node& n);
std::string link_shape(const Topology& t, const Link& l);
std::string impair_diff(const Impairment& from, const Impairment& to);
Impairment impair_in_force(const std::string& key, const Link& l, const Runtime& rt);
bool kernel_default_address(const Interface& iface, const IpPrefix& p);
std::uint32_t default_metric(int family);
std::string route_text(const RouteSpec& r, const Node* node, const std::vector<int>* ifindex);

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
    std::vector<const ObservedNode*> obs_;                          // by desired node
    std::vector<std::optional<std::size_t>> in_built_;              // by desired node
    std::vector<bool> keep_;                                        // kept as it is (same namespace)
    std::vector<std::optional<std::size_t>> netns_op_;              // create_netns op of fresh nodes
    std::vector<std::vector<std::optional<std::size_t>>> creator_;  // [node][iface] op making it
    std::vector<std::vector<std::optional<std::size_t>>> upper_;    // [node][iface] op setting it up
    std::vector<std::vector<bool>> done_;                           // veth main ends made up and enslaved
    std::vector<std::vector<bool>> new_end_;                        // ends of links this plan makes
    std::vector<std::vector<std::size_t>> node_ops_;                // configure ops per node (deps of exec)
    std::vector<std::size_t> stop_op_of_;                           // per desired node, SIZE_MAX: none
    std::vector<std::pair<std::size_t, int>> wait_;                 // ends to wait for
    std::vector<std::size_t> wait_deps_;
    std::vector<std::size_t> link_count_;
    std::vector<bool> restart_daemons_, rerun_exec_, starting_;
    std::set<std::size_t> said_impair_;  // links whose impairment change was said
    // Indexes, so that planning a lab of N nodes is O(N), not O(N^2).
    std::vector<std::string> dkey_;                              // desired link keys
    std::vector<Impairment> want_impair_;                        // by desired link
    std::unordered_map<std::string, std::size_t> built_link_;    // key -> built link
    std::unordered_map<std::string, std::size_t> desired_link_;  // key -> desired link
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

}  // namespace labctl::plan::detail
