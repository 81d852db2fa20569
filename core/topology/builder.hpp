#pragma once
// Internal to topology/: the Builder that turns a parsed document into the model
// (topology::build, build.hpp), one file per part of the document:
//   build.cpp         the walk over the document, names and small parsers
//   build_nodes.cpp   nodes: kind, interfaces, routes, sysctls, commands; addresses and gateways
//   build_links.cpp   links, then resolving interface names and filling implicit interfaces
//   build_checks.cpp  checks and their targets

#include <cstddef>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include <nlohmann/json.hpp>

#include "base/error.hpp"
#include "topology/build.hpp"
#include "topology/model.hpp"

namespace labctl::topology::detail {

using Json = nlohmann::ordered_json;

inline constexpr std::size_t kMaxBridgePorts = 1023;

struct RawRef {  // a reference to an interface by name, resolved once links exist
    std::string name;
    std::string pointer;
};

struct PendingNode {
    std::unordered_map<std::string, std::size_t> iface_index;  // name -> index in interfaces
    std::set<std::string> named_by_links;                      // interface names written in any link, valid or not
    // interface index -> parent name (vlan) / port names (bridge)
    std::map<std::size_t, RawRef> vlan_parent;
    std::map<std::size_t, std::vector<RawRef>> bridge_ports;
    std::map<std::size_t, std::string> iface_pointer;  // declared interfaces only
    // routes in file order, with their raw dev
    std::vector<std::optional<RawRef>> route_dev;
    std::vector<std::string> route_pointer;
    // interface index -> the pointer of each of its addresses, in Interface::addresses order
    std::map<std::size_t, std::vector<std::string>> address_pointer;
    bool bad_address = false;                // one was not an address: its gateways are not judged
    std::set<std::size_t> shared_addresses;  // interfaces with "shared_addresses": true
};

std::string token(const std::string& key);
std::string quote(const std::string& s);
std::optional<Mac> parse_mac(const std::string& text);
bool valid_node_name(const std::string& s);
// Why an interface name is unusable, or "" when it is fine.
std::string ifname_problem(const std::string& name);
// The rule rtnl's sysctl_path() applies: each '.'-separated component, with '/' read as
// '.', is neither "." nor "..".
bool sysctl_components_ok(const std::string& key);

class Builder {
public:
    Builder(const Json& doc, std::vector<TopologyProblem>& problems) : doc_(doc), problems_(problems) {}

    Topology run(const std::string& source);

private:
    void error(std::string pointer, std::string message) {
        problems_.push_back({std::move(pointer), std::move(message)});
    }

    // ---- nodes -------------------------------------------------------------------------

    void nodes(const Json& j);

    void node_body(Node& node, PendingNode& pend, const Json& j, const std::string& ptr);

    void interface(Node& node, PendingNode& pend, const std::string& name, const Json& j, const std::string& ptr);

    void route(Node& node, PendingNode& pend, const Json& j, const std::string& ptr);

    // ---- links -------------------------------------------------------------------------

    std::optional<LinkEnd> endpoint(const std::string& text, const std::string& ptr, std::size_t link);

    void links(const Json& j);

    // ---- after links: resolve names, fill implicit interfaces ------------------------------

    std::optional<std::size_t> resolve(const Node& node, const PendingNode& pend, const RawRef& ref);

    void finish_nodes();

    // ---- addresses and gateways, once every interface is known --------------------------

    // An address belongs to one interface: given twice, pings "succeed" against the wrong
    // node. IPv6 link-local addresses (fe80::/10) are scoped to their link, so only two on
    // one layer-2 segment (a link, a bridge and its ports) collide. Interfaces that say
    // "shared_addresses": true may share theirs with each other (anycast, reused networks).
    void duplicate_addresses();

    // A gateway must be on a link of the node: inside the prefix of one of its addresses
    // (of the route's dev, when it names one), or of a route through a dev alone. The
    // kernel refuses any other ("Nexthop has invalid gateway"). A link-local IPv6 gateway
    // needs the dev it is on.
    void gateways();

    // ---- checks ------------------------------------------------------------------------

    void checks(const Json& j);

    // name, points, within_s: every kind has them.
    static void common_check_fields(Check& check, const Json& c);

    // A command check: `on` + `run`, none of the fields of pings and TCP checks.
    void command_check(const Json& c, const std::string& ptr);

    bool resolve_target(Check& check, int family, const std::string& ptr);

    const Json& doc_;
    std::vector<TopologyProblem>& problems_;
    Topology topo_;
    std::vector<PendingNode> pending_;
    std::unordered_map<std::string, std::size_t> node_index_;

    std::optional<std::size_t> find_node(const std::string& name) const {
        auto it = node_index_.find(name);
        if (it == node_index_.end()) return std::nullopt;
        return it->second;
    }
    static std::optional<std::size_t> find_iface(const PendingNode& pend, const std::string& name) {
        auto it = pend.iface_index.find(name);
        if (it == pend.iface_index.end()) return std::nullopt;
        return it->second;
    }
    // Appends an interface, keeping the name index current.
    static std::size_t add_iface(Node& node, PendingNode& pend, Interface iface) {
        pend.iface_index.emplace(iface.name, node.interfaces.size());
        node.interfaces.push_back(std::move(iface));
        return node.interfaces.size() - 1;
    }
};

}  // namespace labctl::topology::detail
