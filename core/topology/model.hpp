#pragma once
// The validated, resolved topology: what the engine, CLI, graph and Python consume.
// Every reference is resolved to an index; every interface's type is known; every
// check's target is an address. Built only by topology::load()/parse().

#include <array>
#include <cstdint>
#include <optional>
#include <regex>
#include <string>
#include <utility>
#include <vector>

#include "base/ip.hpp"

namespace labctl::topology {

enum class NodeKind { host, router, switch_ };
enum class InterfaceType { veth, tap, tun, dummy, vlan, bridge, loopback };
enum class Expect { reachable, unreachable };
// ping: ICMP echo; tcp: a TCP handshake ("port"); command: a program run in a node ("on" + "run").
enum class CheckKind { ping, tcp, command };

const char* to_string(NodeKind kind);
const char* to_string(InterfaceType type);
const char* to_string(Expect expect);
const char* to_string(CheckKind kind);

using Mac = std::array<std::uint8_t, 6>;
std::string mac_to_string(const Mac& mac);

struct Interface {
    std::string name;
    InterfaceType type = InterfaceType::veth;
    std::vector<IpPrefix> addresses;  // in file order
    std::optional<Mac> mac;
    std::optional<std::uint32_t> mtu;  // the interface's own, or its link's
    bool up = true;
    // tap/tun
    std::optional<std::uint32_t> owner;
    std::optional<std::uint32_t> group;
    // vlan
    std::size_t parent = 0;  // index of the parent in Node::interfaces
    std::uint16_t vlan_id = 0;
    // bridge in a host or router: indexes of its ports in Node::interfaces
    std::vector<std::size_t> ports;
    // port of a host/router bridge, or of a switch's br0 (switch ports are implicit)
    std::optional<std::size_t> master;
    // port of a VLAN-filtering switch
    std::optional<std::uint16_t> pvid;
    std::vector<std::uint16_t> tagged;
    // veth: the link it ends (index in Topology::links) and which end it is (0 or 1)
    std::optional<std::size_t> link;
    int link_end = 0;
    // true when the file has an entry for it under "interfaces"
    bool declared = false;
};

struct Route {
    int family = 0;              // AF_INET or AF_INET6
    std::optional<IpPrefix> to;  // nullopt: default route
    std::optional<IpAddress> via;
    std::optional<std::size_t> dev;  // index in Node::interfaces
    std::optional<std::uint32_t> metric;
    std::string to_string(const struct Node& node) const;  // "10.0.3.0/24 via 10.0.1.1"
};

struct Command {
    std::vector<std::string> argv;  // a string command becomes {"/bin/sh", "-c", text}
    bool shell = false;             // written as a string
    std::string display() const;    // for messages
    bool operator==(const Command&) const = default;
};

// A long-running command of a node. With `ready_port` or `ready_run`, `up` waits (up to
// ready_timeout_s) until a TCP connection from inside the node to that port on one of the
// node's own addresses (loopback included) succeeds, or until `ready_run` exits 0.
struct Daemon {
    std::vector<std::string> argv;
    std::optional<std::uint16_t> ready_port;
    std::vector<std::string> ready_run;  // empty: none
    double ready_timeout_s = 10;
    bool has_readiness() const { return ready_port || !ready_run.empty(); }
    std::string display() const;  // argv joined by spaces
    bool operator==(const Daemon&) const = default;
};

struct Node {
    std::string name;
    std::string netns;  // "<lab>-<node>"
    NodeKind kind = NodeKind::host;
    bool vlan_filtering = false;
    // File order of "interfaces" first (lo where written), then link ends without an
    // entry in link order, then lo if never written. For a switch, br0 is among them.
    std::vector<Interface> interfaces;
    std::vector<Route> routes;
    std::vector<std::pair<std::string, std::string>> sysctls;  // file order
    std::vector<Command> exec;
    std::vector<Daemon> daemons;
    // Added to the clean environment of exec and daemons (file order).
    std::vector<std::pair<std::string, std::string>> env;
    // Who runs exec and daemons: a user name, or a uid in decimal; empty: root.
    std::string user;

    std::optional<std::size_t> find_interface(const std::string& name) const;
    // The first address of the given family in file order, over all interfaces.
    std::optional<IpAddress> first_address(int family) const;
    // The switch's bridge (br0), for switches only.
    std::size_t bridge_index() const;
};

struct Impairment {
    std::optional<double> delay_ms, jitter_ms, loss_pct, rate_mbit, duplicate_pct, reorder_pct;
    bool any() const { return delay_ms || jitter_ms || loss_pct || rate_mbit || duplicate_pct || reorder_pct; }
    // Anything but rate needs netem; rate alone can be done by tbf.
    bool needs_netem() const { return delay_ms || jitter_ms || loss_pct || duplicate_pct || reorder_pct; }
    bool operator==(const Impairment&) const = default;
};

struct LinkEnd {
    std::size_t node = 0;
    std::size_t interface = 0;
};

struct Link {
    std::array<LinkEnd, 2> ends;
    std::optional<std::uint32_t> mtu;
    Impairment impair;
};

// How `expect_stdout` is compiled (std::regex flags), wherever it is.
inline constexpr auto kExpectStdoutSyntax = std::regex_constants::ECMAScript | std::regex_constants::multiline;

struct Check {
    CheckKind kind = CheckKind::ping;
    std::string name;  // empty: none given
    double points = 1;
    double within_s = 0;  // > 0: retried until it holds or this much time has passed
    // What reports call it: `name`, else "FROM -> TO" (+ " port N"), or "NODE: COMMAND".
    std::string label() const;
    // ping and tcp
    std::size_t from_node = 0;
    std::optional<std::size_t> from_interface;  // send out of this interface
    std::string from_text;                      // as written
    std::string to_text;                        // as written
    IpAddress to;                               // resolved
    std::optional<std::size_t> to_node;         // when `to` named a node
    Expect expect = Expect::reachable;
    int count = 3;           // ping only
    int timeout_ms = 1000;   // command: 10000 unless given
    std::uint16_t port = 0;  // tcp
    // command: run `run` inside node `on_node`; holds when it exits with `expect_exit` and
    // (if given) `expect_stdout` is found in its stdout: an ECMAScript regular expression
    // whose ^ and $ match at every line's start and end (as grep reads it), kExpectStdoutSyntax.
    std::size_t on_node = 0;
    std::vector<std::string> run;
    int expect_exit = 0;
    std::optional<std::string> expect_stdout;
};

struct Topology {
    std::string name;
    std::string description;
    std::string source;       // the file it came from, or "<dict>"
    std::vector<Node> nodes;  // file order
    std::vector<Link> links;
    std::vector<Check> checks;

    std::optional<std::size_t> find_node(const std::string& name) const;
    const Interface& interface(const LinkEnd& end) const { return nodes[end.node].interfaces[end.interface]; }
    std::string end_name(const LinkEnd& end) const {  // "h1:eth0"
        return nodes[end.node].name + ":" + interface(end).name;
    }
};

}  // namespace labctl::topology
