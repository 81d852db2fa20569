#pragma once
// Turning a Topology into kernel objects: namespaces, links, addresses, routes.
//
// The order, and why (each phase sends one batch per namespace, never a round trip per
// object):
//  1. namespaces, on one thread; right after each is made, while the thread is still
//     inside it: its netlink socket, lab-wide IPv6 defaults (no DAD, no router
//     solicitations on new interfaces), forwarding for routers, its TUN/TAP devices.
//  2. per namespace: bridges and dummies, lo up.
//  3. veth pairs, grouped by the namespace of their "main" end (the busier node, so a
//     star is one batch); each end born in its own namespace with name, MAC and MTU,
//     the main end already up and enslaved to its bridge.
//  4. per namespace: peer ends and TUN/TAP/dummies up and enslaved, vlan sub-interfaces,
//     bridge VLANs, impairment qdiscs; then the user's sysctls (interfaces exist now);
//     then addresses (NODAD) and routes.
// Interface indexes are chosen here (so no lookup is needed), from kFirstIfindex up,
// each used once in the lab (the two ends of a veth must differ, see create_namespaces);
// TUN/TAP devices get theirs from the kernel and are looked up once.

#include <chrono>
#include <vector>

#include "netns/netns.hpp"
#include "rtnl/rtnl.hpp"
#include "topology/model.hpp"

namespace labctl::state {
class Journal;
}

namespace labctl::realize {

// Well above the indexes the kernel gives devices it makes in every new namespace
// (fallback tunnels such as sit0 when their modules are loaded).
inline constexpr int kFirstIfindex = 1000;

struct Realized {
    std::vector<netns::NetnsHandle> namespaces;  // by node index; empty until made
    std::vector<rtnl::Handle> handles;           // by node index
    std::vector<std::vector<int>> ifindex;       // [node][interface]
};

// The kernel features the topology needs beyond veth and bridge.
std::vector<rtnl::Feature> features_needed(const topology::Topology& topo);

// Phase 1. Writes each namespace's identity to the journal before its name exists.
// On failure no namespace of this call is left. Throws KernelError.
void create_namespaces(const topology::Topology& topo, state::Journal& journal, Realized& out);

// Phases 2-4. Throws KernelError naming the node, object and operation.
void configure(const topology::Topology& topo, Realized& r);

// Waits until every veth end that should be up is operationally up. Throws KernelError
// (ETIMEDOUT) naming the node and the links still down.
void wait_links(const topology::Topology& topo, Realized& r, std::chrono::milliseconds timeout);

// Bridges are made with multicast snooping off (see configure); this turns it on, the
// kernel's default, once their ports are up. One batch per namespace with bridges.
// Throws KernelError.
void finish_bridges(const topology::Topology& topo, Realized& r);

}  // namespace labctl::realize
