#pragma once
// The plan as a value: what must be done to the kernel to turn an observed lab into a
// desired topology, computed before anything is touched.
//
// Rules of this module:
//  - plan() is a pure function: two values in, a Plan out. No syscalls, no clock, no
//    randomness; it is unit-tested without root (tests/unit/plan_test.cpp).
//  - A Plan is a list of typed operations in the order they are executed, each naming the
//    operations it depends on (always earlier ones). realize::execute() sends them: one
//    netlink batch per namespace and stage, as `up` always did.
//  - Everything a plan does not name is left alone: an unchanged node keeps its
//    namespace, interfaces and processes.
//  - `up` is plan(file, nothing); `apply` is plan(new file, observed lab); a runtime change
//    (link down, impairment, node stop) is plan(file + runtime changes, observed lab),
//    with only the nodes it touches dumped from the kernel.

#include <array>
#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "base/ip.hpp"
#include "topology/model.hpp"

namespace labctl::plan {

// Well above the indexes the kernel gives devices it makes in every new namespace
// (fallback tunnels such as sit0 when their modules are loaded).
inline constexpr int kFirstIfindex = 1000;

// --- runtime changes --------------------------------------------------------------------

// Changes made to a running lab by `labctl link/impair/node`, kept until `apply`, `down`
// or the opposite command. Links are named by their key (link_key).
struct Runtime {
    std::set<std::string> links_down;                      // "h1:eth0" (the end pulled)
    std::map<std::string, topology::Impairment> impaired;  // link key -> impairment in force
    std::set<std::string> nodes_stopped;                   // node names
    bool empty() const { return links_down.empty() && impaired.empty() && nodes_stopped.empty(); }
    bool operator==(const Runtime&) const = default;
};

// "h1:eth0 <-> r1:eth1", the ends as written in the file.
std::string link_key(const topology::Topology& topo, const topology::Link& link);
// The link that has `end` ("node:ifname") as one of its ends.
std::optional<std::size_t> find_link(const topology::Topology& topo, const std::string& end);

// --- what is there ------------------------------------------------------------------------

struct ObservedInterface {
    std::string name;
    int ifindex = 0;
    bool admin_up = false;
    std::uint32_t mtu = 0;
    std::vector<IpPrefix> addresses;  // without IPv6 link-local ones
};

struct ObservedRoute {
    int family = 0;
    std::optional<IpPrefix> dst;  // nullopt: default
    std::optional<IpAddress> via;
    int oif = 0;
    std::uint32_t metric = 0;
};

struct ObservedNode {
    std::string name;      // the node's name
    bool present = false;  // its namespace exists and is the one the journal records
    // Its namespace exists but the journal holds only the intent to make it (a run killed
    // while making it): removed, then made again if wanted.
    bool leftover = false;
    bool dumped = false;  // interfaces and routes below were read from the kernel
    // Only the interfaces named in `asked` were read (a runtime change of one link reads
    // its two ends, not a switch's thousand ports); the others are trusted to be as built.
    // Routes are all read, but only those through asked interfaces are compared.
    bool partial = false;
    std::vector<std::string> asked;
    std::vector<ObservedInterface> interfaces;
    std::vector<ObservedRoute> routes;  // the lab's own: main table, made by labctl or by hand
    const ObservedInterface* find(const std::string& ifname) const;
    // Whether what the kernel has of interface `ifname` was read.
    bool covers(const std::string& ifname) const;
};

// The lab as it is: what the journal says it was built from, and what the kernel has.
// A node that was not dumped is trusted to be as built (a runtime change dumps only the
// nodes it touches).
struct Observed {
    std::optional<topology::Topology> built;  // nullopt: nothing of the lab exists
    std::vector<ObservedNode> nodes;          // every namespace the journal records
    Runtime runtime;                          // runtime changes in force
    const ObservedNode* find(const std::string& node) const;
};

// --- the plan -------------------------------------------------------------------------

// Stages run in this order; within a stage, each namespace's operations are sent as one
// batch (write_sysctls splits it: sysctls need the interfaces, addresses come after).
enum class Stage { stop, remove, namespaces, devices, veths, configure, wait, exec, daemons };

enum class OpKind {
    stop_processes,  // kill the node's daemons (or, powering it off, every process in it)
    delete_netns,    // remove a namespace (everything in it goes with it)
    delete_link,     // = ip link del (a veth: both ends)
    delete_address,
    delete_route,
    delete_qdisc,
    create_netns,  // with lab-wide IPv6 defaults, forwarding for routers, TUN/TAP
    add_bridge,
    add_dummy,
    add_veth,  // sent from the namespace of `node` (the link's main end)
    set_link,  // up/down, mtu, master
    add_vlan,
    bridge_vlans,
    replace_qdisc,
    write_sysctls,
    add_address,
    add_route,
    wait_links,      // until every listed end is operationally up
    finish_bridges,  // multicast snooping back on
    run_exec,
    start_daemons,
};
const char* to_string(OpKind kind);
Stage stage_of(OpKind kind);

struct RouteSpec {
    int family = 0;
    std::optional<IpPrefix> dst;
    std::optional<IpAddress> via;
    int oif = 0;
    std::optional<std::uint32_t> metric;
};

struct Op {
    OpKind kind{};
    std::size_t node = 0;   // index in the desired topology (not for delete_netns)
    std::string name;       // delete_netns: the namespace; stop_processes: the node
    int ifindex = 0;        // the interface acted on
    std::size_t iface = 0;  // its index in the desired node, when it has one
    std::size_t link = 0;   // add_veth, replace_qdisc: index in the desired links
    // set_link
    std::optional<bool> up;
    std::optional<std::uint32_t> mtu;
    std::optional<int> master;
    bool all_processes = false;                     // stop_processes: every process in the namespace
    bool may_exist = false;                         // add_route: the kernel may have kept it (EEXIST is fine)
    IpPrefix prefix;                                // add/delete_address
    RouteSpec route;                                // add/delete_route
    topology::Impairment impair;                    // replace_qdisc
    std::vector<std::pair<std::size_t, int>> wait;  // wait_links: (node, ifindex)
    std::vector<std::size_t> deps;                  // indexes of earlier operations
};

// One line of what the user is told: "+ node h4", "~ h1:eth0 addresses +10.0.1.12/24".
struct Change {
    char op = '~';       // '+', '-', '~'
    std::string kind;    // "node", "link", "interface", "route", "sysctls", "exec", "daemons"
    std::string target;  // "h4", "h1:eth0 <-> sw1:p1", "h1:eth0", "h1"
    std::string detail;  // "addresses +10.0.1.12/24 -10.0.1.10/24", "" for + and -
    std::string line() const;
    bool operator==(const Change&) const = default;
};

struct Plan {
    std::vector<Op> ops;
    std::vector<Change> changes;
    // [desired node][interface]: the index each interface has or will get (chosen by the
    // plan for what it creates, TUN/TAP included; 0 for what it cannot see).
    std::vector<std::vector<int>> ifindex;
    // Desired nodes whose namespace this plan creates.
    std::vector<bool> created;
    bool empty() const { return ops.empty(); }
    // "h1: adding 10.0.1.1/24 to eth0": what an operation does, for messages and tests.
    std::string describe(const topology::Topology& desired, std::size_t op) const;
};

// The plan that turns `observed` into `desired` with the runtime changes `runtime` in
// force (empty for up and apply). Pure; throws nothing but std::bad_alloc.
Plan plan(const topology::Topology& desired, const Observed& observed, const Runtime& runtime = {});

}  // namespace labctl::plan
