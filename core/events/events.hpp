#pragma once
// What happens in running labs, as it happens: netlink notifications from every node's
// namespace (links, addresses, routes, qdiscs) and inotify on the state directory (labs
// coming up, going down, being changed). `labctl events` prints these; `labctl serve`
// pushes them to browsers.
//
// Nothing here polls: callers wait for the fds to become readable (poll, epoll, asio)
// and then call read(). Nothing here prints.
//
// Kernel facts relied on:
// - A netlink socket belongs for good to the namespace of the thread that opened it, and
//   keeps that namespace alive while open: a watcher of a lab that went down must be
//   dropped promptly (its veths live on in the orphaned namespaces until then).
// - RTM_NEWLINK is also sent for changes we do not show (statistics, carrier flaps that
//   end where they began): events are only made when the shown state changes.
// - A socket whose receive buffer overflowed gets ENOBUFS once and has lost
//   notifications: the state is then dumped again.

#include <cstdint>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "base/unique_fd.hpp"
#include "nl/nl.hpp"
#include "topology/model.hpp"

namespace labctl::events {

struct Event {
    double time = 0;  // unix time, seconds
    std::string lab;
    std::string type;       // "link", "address", "route", "qdisc", "lab"
    std::string node;       // "" for lab events
    std::string interface;  // "" when the event is not about one interface
    std::string action;     // link: "up", "down", "added", "removed"; address/route/qdisc:
                            // "added", "removed"; lab: "watching", "down", "changed"
    std::string detail;     // "10.0.1.1/24", "default via 10.0.1.1", "netem", "admin down"...
    std::string link;       // "h1:eth0 r1:eth1" when the interface ends a link of the file
};

// One line: "12:00:01.250 h1:eth0 link down (admin down) [h1:eth0 r1:eth1]".
std::string to_text(const Event& e);
// {"time", "lab", "type", "node", "interface", "action", "detail", "link"}; empty
// fields left out.
nlohmann::json to_json(const Event& e);

// The live state of one interface, as netlink says.
struct InterfaceState {
    bool present = false;
    bool admin_up = false;           // IFF_UP
    bool carrier = false;            // IFF_LOWER_UP
    std::uint8_t operstate = 0;      // IF_OPER_*
    std::string root_qdisc;          // kind of the root qdisc ("netem", "tbf", "noqueue"...), "" none
    bool up() const noexcept;        // present and operationally up
    bool impaired() const noexcept;  // a netem or tbf root qdisc
    // Why it is not up: "admin down", "no carrier", an operstate name; "" when up.
    std::string why_down() const;
};

// "up", "down", "lowerlayerdown"... (RFC 2863 names, as `ip link` prints them).
std::string operstate_name(std::uint8_t operstate);

// Watches every node of one running lab. Movable, not copyable.
class LabWatcher {
public:
    // Opens, in each node's namespace, a netlink socket subscribed to link, address,
    // route and tc notifications and another for dumps, then dumps the links and root
    // qdiscs. A node whose namespace is missing is watched by nothing and shown as
    // missing. Throws KernelError when a socket cannot be opened or a dump fails.
    explicit LabWatcher(topology::Topology topo);
    LabWatcher(LabWatcher&&) = default;
    LabWatcher& operator=(LabWatcher&&) = default;

    const topology::Topology& topology() const noexcept { return topo_; }
    // One fd per watched node; readable when notifications are queued.
    std::vector<int> fds() const;
    // Reads everything queued on fds()[i] without blocking, updates the state and returns
    // what changed, in order. Throws KernelError when the socket fails (not for ENOBUFS:
    // the node is dumped again and the changes found are returned).
    std::vector<Event> read(std::size_t i);

    bool node_present(std::size_t node) const;
    // The state of node's interface `ifname`; a default (not present) one when unknown.
    InterfaceState interface(std::size_t node, const std::string& ifname) const;

private:
    struct Iface {
        std::string name;
        InterfaceState state;
    };
    struct Watched {
        std::size_t node = 0;
        nl::Socket events;
        nl::Socket query;
        std::map<int, Iface> ifaces;  // by ifindex
    };
    void dump(Watched& w, std::vector<Event>* changes);
    void handle(Watched& w, const nlmsghdr* nlh, std::vector<Event>& out);
    Event make(const Watched& w, const std::string& ifname, std::string type, std::string action,
               std::string detail) const;

    topology::Topology topo_;
    std::vector<Watched> watched_;
    std::vector<std::optional<std::size_t>> by_node_;  // node -> index in watched_
};

// Labs appearing, changing and going away under the state root: inotify on the root
// and on each lab's directory; and on the namespaces' directory (/run/netns), so that a
// node whose namespace is removed by hand is seen as missing.
class StateWatcher {
public:
    // Creates the state root (mode 0700) when it does not exist yet, and watches it.
    // Throws KernelError.
    StateWatcher();
    int fd() const noexcept { return fd_.get(); }
    // Reads queued inotify events without blocking; returns the names of the labs whose
    // directory appeared, changed or went away, or one of whose namespaces (<lab>-<node>)
    // appeared or went away (each once). Throws KernelError.
    std::vector<std::string> read();

private:
    void watch_lab(const std::string& name);
    UniqueFd fd_;
    int root_wd_ = -1;
    int netns_wd_ = -1;
    std::map<int, std::string> lab_wds_;
};

// Labs whose journal says they are complete (up), sorted. Throws nothing: a lab whose
// state cannot be read is left out.
std::vector<std::string> running_labs();

// Follows one running lab: calls `each` first with {type "lab", action "watching"} once
// every watch is in place, then for every event until the lab goes down (the
// last event is then {type "lab", action "down"}) or `each` returns false. When the lab's
// topology is replaced (apply), the watch starts over on the new one ({"lab", "changed"}).
// Throws LabError when the lab is not up, KernelError when watching fails.
void follow(const std::string& lab, const std::function<bool(const Event&)>& each);

// The current unix time in seconds.
double now();

}  // namespace labctl::events
