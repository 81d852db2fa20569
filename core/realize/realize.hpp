#pragma once
// Executing a plan::Plan: the kernel work of up, apply and runtime changes.
//
// Stage by stage (plan::Stage), and within a stage one netlink batch per namespace,
// never a round trip per object:
//  stop       processes (through the caller's hooks: the journal knows the daemons)
//  remove     namespaces (hooks), links, addresses, routes, qdiscs; "already gone" is fine
//  namespaces made on threads; right after each is made, while the thread is still inside
//             it: its netlink socket, lab-wide IPv6 defaults (no DAD, no router
//             solicitations on new interfaces), forwarding for routers, its TUN/TAP
//             devices. Names are journaled before, identities after.
//  devices    bridges and dummies
//  veths      grouped by the namespace of their main end (the busier node, so a star is
//             one batch); each end born in its own namespace with name, MAC, MTU and the
//             index the plan chose, the main end already up and enslaved to its bridge
//  configure  per namespace: qdiscs, links up/enslaved, vlans, bridge VLANs; then the
//             user's sysctls (interfaces exist now); then addresses (NODAD) and routes
//  wait       until the links brought up are operationally up; bridges' snooping back on
//  exec, daemons (hooks)

#include <atomic>
#include <chrono>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "netns/netns.hpp"
#include "plan/plan.hpp"
#include "rtnl/rtnl.hpp"
#include "topology/model.hpp"

namespace labctl::state {
class Journal;
}

namespace labctl::realize {

// The kernel features the topology needs beyond veth and bridge.
std::vector<rtnl::Feature> features_needed(const topology::Topology& topo);

// What execute() asks of its caller for work that is not netlink.
struct Hooks {
    // Stop the node's daemons (all = every process in its namespace: powering it off).
    std::function<void(const std::string& node, bool all)> stop_processes;
    // Remove these namespaces of the lab (identity-checked by the caller).
    std::function<void(const std::vector<std::string>& netns)> remove_namespaces;
    // Run the node's exec commands / start its daemons; `netns_fd` is its namespace.
    std::function<void(std::size_t node, int netns_fd)> run_exec;
    std::function<void(std::size_t node, int netns_fd)> start_daemons;
};

struct Options {
    std::chrono::milliseconds link_timeout{30000};
    const std::atomic<bool>* cancel = nullptr;  // checked between stages (LabError EINTR)
};

// The most fds execute() holds at once for a lab of `nodes` nodes: a namespace fd and
// a netlink socket per node being worked on, at most a fixed number of nodes at a time
// (and the namespaces one bridge's veth batch pins), whatever the lab's size.
std::size_t fds_held_at_most(std::size_t nodes);

// Runs the plan. Namespaces the plan creates are journaled (names before, identities
// after). Throws KernelError naming the node, object and operation, or what a hook
// throws; what was done stays done (the caller undoes: teardown for up, the reverse plan
// for apply).
void execute(const topology::Topology& desired, const plan::Plan& p, state::Journal& journal, const Hooks& hooks,
             const Options& options);

}  // namespace labctl::realize
