// Node commands (exec, start, exec_interactive), ping from a node, and capture.
#include <string>
#include <vector>

#include "base/error.hpp"
#include "engine/internal.hpp"
#include "engine/lab.hpp"
#include "netns/netns.hpp"
#include "proc/proc.hpp"
#include "state/state.hpp"

namespace labctl::engine {

using namespace topology;
using Json = nlohmann::json;

using namespace detail;

PingOutcome Lab::ping(const std::string& from, const std::string& to, int count, std::chrono::milliseconds timeout,
                      std::chrono::milliseconds interval, const std::function<void(const ping::Reply&)>& on_reply,
                      int family) {
    if (count < 1 || count > kMaxPingCount)
        throw UsageError("count must be 1 to " + std::to_string(kMaxPingCount) + ", not " + std::to_string(count));
    if (family != 0 && family != 4 && family != 6) throw UsageError("family must be 4 or 6");
    if (!is_up()) throw UsageError("lab " + topo_.name + " is not up");
    std::string from_node = from.substr(0, from.find(':'));
    const Node& src = node(from_node);
    ping::Probe p;
    if (from.find(':') != std::string::npos) {
        std::string ifname = from.substr(from.find(':') + 1);
        if (!src.find_interface(ifname)) throw UsageError("node " + from_node + " has no interface \"" + ifname + "\"");
        p.bind_ifname = ifname;
    }
    // The target resolves as a check's does: first address, IPv4 before IPv6.
    std::optional<IpAddress> addr = IpAddress::parse(to);
    if (addr && family && addr->family != (family == 6 ? AF_INET6 : AF_INET))
        throw UsageError(to + " is not an IPv" + std::to_string(family) + " address");
    if (!addr) {
        std::string to_node = to.substr(0, to.find(':'));
        const Node& dst = node(to_node);
        if (to.find(':') != std::string::npos) {
            auto i = dst.find_interface(to.substr(to.find(':') + 1));
            if (!i) throw UsageError("node " + to_node + " has no interface \"" + to.substr(to.find(':') + 1) + "\"");
            for (const auto& pr : dst.interfaces[*i].addresses) {
                if (family && pr.address.family != (family == 6 ? AF_INET6 : AF_INET)) continue;
                if (!addr || (addr->family == AF_INET6 && pr.address.family == AF_INET)) addr = pr.address;
            }
        } else if (family) {
            addr = dst.first_address(family == 6 ? AF_INET6 : AF_INET);
        } else {
            addr = dst.first_address(AF_INET);
            if (!addr) addr = dst.first_address(AF_INET6);
        }
        if (!addr)
            throw UsageError(to + " has no " +
                             (family == 4       ? "IPv4 "
                                  : family == 6 ? "IPv6 "
                                                : "") +
                             "address to ping");
    }
    netns::NetnsHandle ns = netns::open(src.netns);
    p.netns_fd = ns.fd.get();
    p.netns_name = src.netns;
    p.destination = *addr;
    p.count = count;
    p.interval = interval;
    p.timeout = timeout;
    p.stop_at_first_reply = false;
    p.stop_on_error = false;
    auto results = ping::run(
        {p},
        [&](std::size_t, const ping::Reply& r) {
            if (on_reply) on_reply(r);
        },
        &interrupt_flag());
    return {addr->to_string(), results.at(0)};
}

ExecResult Lab::exec(const std::string& node_name, const std::vector<std::string>& argv,
                     const std::optional<std::string>& input, std::optional<std::chrono::milliseconds> timeout,
                     const std::map<std::string, std::string>& env, const std::string& cwd) {
    const Node& n = node(node_name);
    if (!is_up()) throw UsageError("lab " + topo_.name + " is not up");
    if (argv.empty()) throw UsageError("exec needs a command");
    proc::Command cmd{n.netns, argv, env, -1, n.name};
    cmd.cwd = cwd;
    auto r = proc::run(cmd, input, timeout);
    return {r.returncode, r.out, r.err, r.timed_out};
}

Background Lab::start(const std::string& node_name, const std::vector<std::string>& argv,
                      const std::map<std::string, std::string>& env, const std::string& cwd) {
    const Node& n = node(node_name);
    if (argv.empty()) throw UsageError("a background process needs a command");
    state::LabLock lock(topo_.name);
    if (!is_up()) throw UsageError("lab " + topo_.name + " is not up");
    auto journal = state::Journal::reopen(topo_.name);
    auto rec = state::Journal::load(topo_.name);
    std::size_t k = rec ? rec->daemons.size() : 0;
    std::string log = journal.log_dir() + "/" + n.name + ".process." + std::to_string(k) + ".log";
    proc::Command cmd{n.netns, argv, env, -1, n.name};
    cmd.cwd = cwd;
    auto id = proc::start_child(cmd, log);
    // Recorded as a daemon of the node: `down` stops it with the lab.
    journal.daemon_started({n.name, argv, id.pid, id.start_time, log});
    return {id.pid, id.start_time, log};
}

int Lab::exec_interactive(const std::string& node_name, const std::vector<std::string>& argv) {
    const Node& n = node(node_name);
    if (!is_up()) throw UsageError("lab " + topo_.name + " is not up");
    if (argv.empty()) throw UsageError("exec needs a command");
    return proc::run_interactive(proc::Command{n.netns, argv, {}, -1, n.name});
}

capture::Capture Lab::capture(const CaptureRequest& request) const {
    if (!is_up()) throw LabError("lab " + topo_.name + " is not up");
    std::vector<capture::Target> targets;
    auto add = [&](const Node& n, const std::string& ifname) {
        std::string label = n.name + ":" + ifname;
        for (const auto& t : targets)
            if (t.label == label) return;  // named twice: one block
        targets.push_back({label, n.netns, ifname});
    };
    if (request.all) {
        // A bridge's ports carry every frame it forwards, sends or receives: capturing the
        // bridge too would store each twice, and a promiscuous bridge hands every frame it
        // forwards to its own stack as well (measured: the costliest interfaces to capture).
        for (const auto& n : topo_.nodes)
            for (const auto& i : n.interfaces)
                if (i.type != InterfaceType::loopback && i.type != InterfaceType::bridge) add(n, i.name);
    }
    for (const auto& name : request.interfaces) {
        auto colon = name.find(':');
        if (colon == std::string::npos || colon == 0 || colon + 1 == name.size())
            throw capture::RequestError("\"" + name + "\" is not NODE:IFNAME");
        auto n = topo_.find_node(name.substr(0, colon));
        if (!n) throw capture::RequestError("lab " + topo_.name + " has no node \"" + name.substr(0, colon) + "\"");
        // An interface the file does not name (made by an exec command) is looked up in
        // the namespace: capture::open says when it is not there.
        add(topo_.nodes[*n], name.substr(colon + 1));
    }
    raise_fd_limit();
    return capture::Capture::open(targets, request.options);
}

}  // namespace labctl::engine
