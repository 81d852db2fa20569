#include "engine/lab.hpp"

#include <linux/capability.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <map>
#include <regex>
#include <sstream>
#include <sys/stat.h>

#include "base/error.hpp"
#include "netns/netns.hpp"
#include "proc/proc.hpp"
#include "engine/internal.hpp"
#include "plan/plan.hpp"
#include "realize/realize.hpp"
#include "rtnl/rtnl.hpp"
#include "state/state.hpp"
#include "topology/load.hpp"

namespace labctl::engine {

using namespace topology;
using Json = nlohmann::json;

namespace detail {

bool valid_lab_name(const std::string& s) {
    static const std::regex re("^[a-z][a-z0-9-]{0,15}$");
    return std::regex_match(s, re);
}

std::string join(const std::vector<std::string>& parts, const std::string& sep) {
    std::string out;
    for (const auto& p : parts) out += (out.empty() ? "" : sep) + p;
    return out;
}

// Whether `name` is a namespace name `lab` can own: `<lab>-<node>`, one path component.
// A journal naming anything else was not written by labctl (or was altered).
bool lab_namespace_name(const std::string& lab, const std::string& name) {
    const std::string prefix = lab + "-";
    return name.size() > prefix.size() && name.starts_with(prefix) &&
           name.find('/') == std::string::npos;
}

// Removes what the journal records, then the journal. Never touches a namespace whose
// identity differs from the recorded one, nor one named outside the lab.
void teardown(const state::LabRecord& rec) {
    std::vector<std::string> problems;
    for (const auto& d : rec.daemons) {
        try {
            proc::stop({d.pid, d.start_time}, kStopGrace);
        } catch (const std::exception& e) {
            problems.push_back(d.node + ": stopping daemon " + std::to_string(d.pid) + ": " + e.what());
        }
    }
    std::vector<proc::NetnsId> ours;
    std::vector<std::string> names;
    for (const auto& ns : rec.namespaces) {
        if (!lab_namespace_name(rec.lab, ns.name)) {
            problems.push_back("the journal names namespace '" + ns.name + "', which is not one of lab " +
                               rec.lab + "'s (" + rec.lab + "-<node>); left alone");
            continue;
        }
        auto current = netns::identity(ns.name);
        if (!current) {
            // Not mounted: at most a file left by a creator killed half-way.
            if (ns.ino == 0 && netns::exists(ns.name)) names.push_back(ns.name);
            continue;
        }
        if (ns.ino != 0 && (current->first != ns.dev || current->second != ns.ino)) {
            problems.push_back("namespace " + ns.name +
                               " is not the one labctl created (it was replaced); left alone");
            continue;
        }
        ours.push_back(*current);
        names.push_back(ns.name);
    }
    // A process inside keeps a namespace alive after its name is gone: stop them first.
    try {
        proc::kill_all_in_any_netns(ours, kStopGrace);
    } catch (const std::exception& e) {
        problems.push_back(std::string("stopping processes in the lab: ") + e.what());
    }
    for (auto& failure : netns::remove_many(names)) problems.push_back(std::move(failure));
    state::Journal::remove(rec.lab);
    if (!problems.empty()) throw LabError("lab " + rec.lab + ": " + join(problems, "; "));
}

// The last `max_lines` lines of `text`.
std::string tail(const std::string& text, std::size_t max_lines) {
    std::vector<std::string> lines;
    std::istringstream in(text);
    for (std::string line; std::getline(in, line);) lines.push_back(line);
    std::size_t first = lines.size() > max_lines ? lines.size() - max_lines : 0;
    std::string out;
    for (std::size_t i = first; i < lines.size(); ++i) out += (out.empty() ? "" : "\n") + lines[i];
    return out;
}

// A lab holds a namespace fd and a netlink socket per node, and the pinger a socket
// per namespace: 1,000 nodes need more than the usual soft limit of 1,024 fds.
void raise_fd_limit() {
    struct rlimit rl {};
    if (::getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        ::setrlimit(RLIMIT_NOFILE, &rl);
    }
}

void rename(Topology& topo, const std::string& name) {
    topo.name = name;
    for (auto& n : topo.nodes) n.netns = name + "-" + n.name;
}

}  // namespace detail

namespace {

using namespace detail;

CheckResult to_check_result(const std::string& from, const std::string& to, const IpAddress& addr,
                            Expect expect, const ping::ProbeResult& p) {
    CheckResult r;
    r.from = from;
    r.to = to;
    r.address = addr.to_string();
    r.expect = expect;
    r.sent = p.sent;
    r.received = p.received;
    r.rtt_min = p.rtt_min();
    r.rtt_avg = p.rtt_avg();
    r.rtt_max = p.rtt_max();
    r.reason = p.reason;
    r.ok = expect == Expect::reachable ? p.received > 0 : p.received == 0;
    return r;
}

std::string read_text_file(const std::string& path) {
    std::ifstream f(path);
    std::stringstream ss;
    ss << f.rdbuf();
    return ss.str();
}

// Building holds a namespace fd and a netlink socket per node at once (plus a few of
// our own): refuse, before anything is touched, a lab that cannot fit the fd limit,
// instead of failing half-way with EMFILE and rolling back.
void require_fd_budget(const Topology& topo) {
    constexpr rlim_t kSpare = 64;
    const rlim_t need = 2 * static_cast<rlim_t>(topo.nodes.size()) + kSpare;
    struct rlimit rl {};
    if (::getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur >= need) return;
    throw LabError("lab " + topo.name + " has " + std::to_string(topo.nodes.size()) +
                       " nodes and needs about " + std::to_string(need) +
                       " open files (a namespace and a netlink socket per node), but this process may open only " +
                       std::to_string(rl.rlim_cur) + " (RLIMIT_NOFILE); raise the limit (ulimit -n " +
                       std::to_string(need) + ") and run it again. Nothing was touched",
                   EMFILE);
}

}  // namespace

nlohmann::json to_json(const CheckResult& r) {
    return Json{{"from", r.from},         {"to", r.to},           {"address", r.address},
                {"expect", to_string(r.expect)}, {"ok", r.ok},    {"sent", r.sent},
                {"received", r.received}, {"rtt_min_ms", r.rtt_min}, {"rtt_avg_ms", r.rtt_avg},
                {"rtt_max_ms", r.rtt_max}, {"reason", r.reason}};
}

bool UpResult::checks_ok() const {
    return std::all_of(checks.begin(), checks.end(), [](const CheckResult& c) { return c.ok; });
}

std::atomic<bool>& interrupt_flag() {
    static std::atomic<bool> flag{false};
    return flag;
}

void require_privileges() {
    __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};
    __user_cap_data_struct data[2]{};
    if (::syscall(SYS_capget, &header, data) != 0) throw_last_errno("reading our capabilities");
    auto has = [&](int cap) { return (data[cap / 32].effective >> (cap % 32)) & 1u; };
    std::vector<std::string> missing;
    if (!has(CAP_NET_ADMIN)) missing.push_back("CAP_NET_ADMIN");
    if (!has(CAP_SYS_ADMIN)) missing.push_back("CAP_SYS_ADMIN");
    if (!missing.empty())
        throw LabError("labctl needs " + join(missing, " and ") +
                       " to build labs (namespaces and interfaces); run it as root, e.g. with sudo",
                       EPERM);
}

Lab::Lab(Topology topo, std::string topology_text, const std::string& instance)
    : topo_(std::move(topo)), text_(std::move(topology_text)) {
    if (instance.empty() || instance == topo_.name) return;
    if (!valid_lab_name(instance))
        throw LabError("\"" + instance + "\" is not a lab name (^[a-z][a-z0-9-]{0,15}$)", EINVAL);
    rename(topo_, instance);
}

Lab Lab::from_file(const std::string& path, const std::string& instance) {
    Topology t = load_file(path);
    std::ifstream f(path);
    std::stringstream ss;
    ss << f.rdbuf();
    return Lab(std::move(t), ss.str(), instance);
}

Lab Lab::from_text(const std::string& text, const std::string& source, const std::string& instance) {
    return Lab(load_text(text, source), text, instance);
}

Lab Lab::attach(const std::string& name) {
    if (!valid_lab_name(name)) throw LabError("\"" + name + "\" is not a lab name");
    auto rec = state::Journal::load(name);
    if (!rec || !rec->complete) throw LabError("lab " + name + " is not up");
    std::string text = state::Journal::topology_text(name);
    // An instance (`--name`) runs a file whose own name differs.
    return Lab(load_text(text, state::state_root() + "/" + name + "/topology.json"), text, name);
}

bool Lab::is_up() const {
    auto rec = state::Journal::load(topo_.name);
    return rec && rec->complete;
}

const Node& Lab::node(const std::string& name) const {
    auto n = topo_.find_node(name);
    if (!n) throw LabError("lab " + topo_.name + " has no node \"" + name + "\"");
    return topo_.nodes[*n];
}

UpResult Lab::up(bool verify) {
    require_privileges();
    raise_fd_limit();
    require_fd_budget(topo_);
    // Missing kernel features are found before anything of the lab is touched.
    auto missing = rtnl::missing_features(realize::features_needed(topo_));
    if (!missing.empty()) {
        std::vector<std::string> why;
        for (auto f : missing) why.push_back(rtnl::missing_feature_message(f));
        throw LabError("lab " + topo_.name + " cannot be built here: " + join(why, "; "), EOPNOTSUPP);
    }
    if (text_.empty()) text_ = "{}";

    UpResult result;
    state::LabLock lock(topo_.name);
    if (auto rec = state::Journal::load(topo_.name)) {
        if (rec->complete)
            throw LabError("lab " + topo_.name + " is already up; run `labctl down " + topo_.name + "` first",
                           EEXIST);
        teardown(*rec);
        result.notes.push_back("removed the leftovers of an interrupted `up` of lab " + topo_.name);
    }
    for (const auto& n : topo_.nodes) {
        if (!netns::exists(n.netns)) continue;
        // Lab `a` node `b-c` and lab `a-b` node `c` share a namespace name.
        for (const auto& other : state::Journal::list()) {
            if (other == topo_.name || !n.netns.starts_with(other + "-")) continue;
            auto rec = state::Journal::load(other);
            if (rec && std::any_of(rec->namespaces.begin(), rec->namespaces.end(),
                                   [&](const state::RecordedNetns& x) { return x.name == n.netns; }))
                throw LabError("namespace " + n.netns + " of node " + n.name + " belongs to lab " + other +
                                   "; lab " + topo_.name + " cannot be up at the same time (rename one of them)",
                               EEXIST);
        }
        throw LabError("namespace " + n.netns + " already exists and is not part of lab " + topo_.name +
                           " (labctl never touches it); remove it or rename the lab",
                       EEXIST);
    }

    auto journal = state::Journal::begin(topo_.name, topo_.source, text_);
    // up = plan(file, nothing): every operation of the lab, executed stage by stage.
    const plan::Plan p = plan::plan(topo_, plan::Observed{});
    realize::Options options;
    options.link_timeout = kLinkTimeout;
    options.cancel = &interrupt_flag();
    try {
        realize::execute(topo_, p, journal, make_hooks(topo_, journal), options);
    } catch (const std::exception& e) {
        // Remove what was built; a failure to do so is said with the failure itself.
        std::string undo_error;
        try {
            if (auto rec = state::Journal::load(topo_.name)) teardown(*rec);
        } catch (const std::exception& u) {
            undo_error = u.what();
        }
        int err = 0;
        if (auto* k = dynamic_cast<const KernelError*>(&e)) err = k->errno_value();
        if (auto* l = dynamic_cast<const LabError*>(&e)) err = l->errno_value();
        if (err == EINTR && dynamic_cast<const LabError*>(&e))
            throw LabError(std::string(e.what()) + "; removed what was built" +
                               (undo_error.empty() ? "" : "; and while removing the lab: " + undo_error),
                           EINTR);
        if (undo_error.empty()) throw;
        throw LabError(std::string(e.what()) + "; and while removing the lab: " + undo_error, err);
    }
    journal.complete();
    if (verify) result.checks = this->verify(false);
    return result;
}

std::vector<CheckResult> Lab::verify(bool all_pairs) {
    if (!is_up()) throw LabError("lab " + topo_.name + " is not up");
    raise_fd_limit();
    std::vector<netns::NetnsHandle> ns;
    ns.reserve(topo_.nodes.size());
    for (const auto& n : topo_.nodes) ns.push_back(netns::open(n.netns));

    struct Want {
        std::string from, to;
        IpAddress addr;
        Expect expect;
    };
    std::vector<ping::Probe> probes;
    std::vector<Want> wants;
    if (!all_pairs) {
        for (const auto& c : topo_.checks) {
            ping::Probe p;
            p.netns_fd = ns[c.from_node].fd.get();
            if (c.from_interface) p.bind_ifname = topo_.nodes[c.from_node].interfaces[*c.from_interface].name;
            p.destination = c.to;
            p.count = c.count;
            p.timeout = std::chrono::milliseconds(c.timeout_ms);
            p.stop_at_first_reply = true;
            probes.push_back(p);
            wants.push_back({c.from_text, c.to_text, c.to, c.expect});
        }
    } else {
        for (std::size_t a = 0; a < topo_.nodes.size(); ++a) {
            for (std::size_t b = 0; b < topo_.nodes.size(); ++b) {
                if (a == b) continue;
                // The target's first address in a family the source has an address of
                // (IPv4 first): a node without one (a switch) sends nothing in it.
                std::optional<IpAddress> addr;
                for (int family : {AF_INET, AF_INET6}) {
                    if (!topo_.nodes[a].first_address(family)) continue;
                    if ((addr = topo_.nodes[b].first_address(family))) break;
                }
                if (!addr) continue;
                ping::Probe p;
                p.netns_fd = ns[a].fd.get();
                p.destination = *addr;
                probes.push_back(p);
                wants.push_back({topo_.nodes[a].name, topo_.nodes[b].name, *addr, Expect::reachable});
            }
        }
    }
    auto results = ping::run(probes);
    std::vector<CheckResult> out;
    out.reserve(results.size());
    for (std::size_t i = 0; i < results.size(); ++i)
        out.push_back(to_check_result(wants[i].from, wants[i].to, wants[i].addr, wants[i].expect, results[i]));
    return out;
}

PingOutcome Lab::ping(const std::string& from, const std::string& to, int count, std::chrono::milliseconds timeout,
                      std::chrono::milliseconds interval, const std::function<void(const ping::Reply&)>& on_reply) {
    if (!is_up()) throw LabError("lab " + topo_.name + " is not up");
    std::string from_node = from.substr(0, from.find(':'));
    const Node& src = node(from_node);
    ping::Probe p;
    if (from.find(':') != std::string::npos) {
        std::string ifname = from.substr(from.find(':') + 1);
        if (!src.find_interface(ifname)) throw LabError("node " + from_node + " has no interface \"" + ifname + "\"");
        p.bind_ifname = ifname;
    }
    // The target resolves as a check's does: first address, IPv4 before IPv6.
    std::optional<IpAddress> addr = IpAddress::parse(to);
    if (!addr) {
        std::string to_node = to.substr(0, to.find(':'));
        const Node& dst = node(to_node);
        if (to.find(':') != std::string::npos) {
            auto i = dst.find_interface(to.substr(to.find(':') + 1));
            if (!i) throw LabError("node " + to_node + " has no interface \"" + to.substr(to.find(':') + 1) + "\"");
            for (const auto& pr : dst.interfaces[*i].addresses)
                if (!addr || (addr->family == AF_INET6 && pr.address.family == AF_INET)) addr = pr.address;
        } else {
            addr = dst.first_address(AF_INET);
            if (!addr) addr = dst.first_address(AF_INET6);
        }
        if (!addr) throw LabError(to + " has no address to ping");
    }
    netns::NetnsHandle ns = netns::open(src.netns);
    p.netns_fd = ns.fd.get();
    p.destination = *addr;
    p.count = count;
    p.interval = interval;
    p.timeout = timeout;
    p.stop_at_first_reply = false;
    p.stop_on_error = false;
    auto results = ping::run({p}, [&](std::size_t, const ping::Reply& r) {
        if (on_reply) on_reply(r);
    });
    return {addr->to_string(), results.at(0)};
}

ExecResult Lab::exec(const std::string& node_name, const std::vector<std::string>& argv,
                     const std::optional<std::string>& input, std::optional<std::chrono::milliseconds> timeout) {
    const Node& n = node(node_name);
    if (!is_up()) throw LabError("lab " + topo_.name + " is not up");
    if (argv.empty()) throw LabError("exec needs a command");
    auto r = proc::run(proc::Command{n.netns, argv, {}, -1, n.name}, input, timeout);
    return {r.returncode, r.out, r.err, r.timed_out};
}

int Lab::exec_interactive(const std::string& node_name, const std::vector<std::string>& argv) {
    const Node& n = node(node_name);
    if (!is_up()) throw LabError("lab " + topo_.name + " is not up");
    if (argv.empty()) throw LabError("exec needs a command");
    return proc::run_interactive(proc::Command{n.netns, argv, {}, -1, n.name});
}

nlohmann::json Lab::status() const {
    Json out{{"name", topo_.name}, {"description", topo_.description}};
    auto rec = state::Journal::load(topo_.name);
    out["up"] = rec && rec->complete;
    out["state"] = !rec ? "down" : rec->complete ? "up" : "incomplete";
    if (rec) {
        out["source"] = rec->source;
        out["started"] = rec->started;
        out["state_dir"] = state::state_root() + "/" + topo_.name;
    }
    Json nodes = Json::array();
    for (const auto& node : topo_.nodes) {
        Json jn{{"name", node.name}, {"kind", to_string(node.kind)}, {"namespace", node.netns}};
        Json ifaces = Json::array();
        bool present = rec && netns::identity(node.netns).has_value();
        jn["present"] = present;
        if (present) {
            try {
                auto ns = netns::open(node.netns);
                auto h = rtnl::Handle::open_in(ns);
                auto links = rtnl::link_dump(h);
                auto addrs = rtnl::addr_dump(h);
                for (const auto& l : links) {
                    Json addresses = Json::array();
                    for (const auto& a : addrs)
                        if (a.ifindex == l.ifindex) addresses.push_back(a.prefix.to_string());
                    static const char* oper[] = {"unknown", "notpresent", "down", "lowerlayerdown",
                                                 "testing", "dormant", "up"};
                    std::string master;
                    for (const auto& m : links)
                        if (m.ifindex == l.master) master = m.name;
                    Json ji{{"name", l.name},
                            {"kind", l.kind.empty() ? (l.name == "lo" ? "loopback" : "") : l.kind},
                            {"state", l.operstate < 7 ? oper[l.operstate] : "unknown"},
                            {"mtu", l.mtu},
                            {"mac", mac_to_string(l.mac)},
                            {"addresses", addresses}};
                    if (!master.empty()) ji["master"] = master;
                    ifaces.push_back(ji);
                }
            } catch (const std::exception& e) {
                jn["error"] = e.what();
            }
        }
        jn["interfaces"] = ifaces;
        Json daemons = Json::array();
        if (rec)
            for (const auto& d : rec->daemons)
                if (d.node == node.name) {
                    bool alive = false;
                    try {
                        alive = proc::is_same_process({d.pid, d.start_time});
                    } catch (const std::exception&) {
                    }
                    daemons.push_back({{"argv", d.argv}, {"pid", d.pid}, {"running", alive}, {"log", d.log}});
                }
        jn["daemons"] = daemons;
        nodes.push_back(jn);
    }
    out["nodes"] = nodes;
    Json links = Json::array();
    for (const auto& l : topo_.links) links.push_back({topo_.end_name(l.ends[0]), topo_.end_name(l.ends[1])});
    out["links"] = links;
    // Runtime changes in force (labctl link/impair/node), until apply or down.
    plan::Runtime rt = rec ? runtime_from_json(topo_, rec->runtime) : plan::Runtime{};
    Json impaired = Json::object();
    for (const auto& [key, im] : rt.impaired) {
        Json v = Json::object();
        for (auto [f, x] : {std::pair{"delay_ms", im.delay_ms}, {"jitter_ms", im.jitter_ms}, {"loss_pct", im.loss_pct},
                            {"rate_mbit", im.rate_mbit}, {"duplicate_pct", im.duplicate_pct},
                            {"reorder_pct", im.reorder_pct}})
            if (x) v[f] = *x;
        impaired[key] = v;
    }
    out["runtime"] = {{"links_down", rt.links_down}, {"impaired", impaired}, {"nodes_stopped", rt.nodes_stopped}};
    for (auto& jn : out["nodes"]) jn["stopped"] = rt.nodes_stopped.count(jn["name"].get<std::string>()) > 0;
    return out;
}

bool Lab::down() { return engine::down(topo_.name); }

namespace {

// Layer-2 segments: interfaces joined by a veth link or by a bridge are in one segment.
// Returns, per segment, how many interfaces in it have an address.
std::vector<std::size_t> addressed_per_segment(const Topology& topo) {
    std::vector<std::size_t> base(topo.nodes.size() + 1, 0);
    for (std::size_t n = 0; n < topo.nodes.size(); ++n) base[n + 1] = base[n] + topo.nodes[n].interfaces.size();
    std::vector<std::size_t> parent(base.back());
    for (std::size_t i = 0; i < parent.size(); ++i) parent[i] = i;
    auto find = [&](std::size_t x) {
        while (parent[x] != x) x = parent[x] = parent[parent[x]];
        return x;
    };
    auto join = [&](std::size_t a, std::size_t b) { parent[find(a)] = find(b); };
    for (const auto& l : topo.links)
        join(base[l.ends[0].node] + l.ends[0].interface, base[l.ends[1].node] + l.ends[1].interface);
    for (std::size_t n = 0; n < topo.nodes.size(); ++n)
        for (std::size_t i = 0; i < topo.nodes[n].interfaces.size(); ++i)
            if (auto m = topo.nodes[n].interfaces[i].master) join(base[n] + i, base[n] + *m);
    std::map<std::size_t, std::size_t> count;
    for (std::size_t n = 0; n < topo.nodes.size(); ++n)
        for (std::size_t i = 0; i < topo.nodes[n].interfaces.size(); ++i) {
            const auto& iface = topo.nodes[n].interfaces[i];
            if (!iface.addresses.empty() && iface.type != InterfaceType::loopback) ++count[find(base[n] + i)];
        }
    std::vector<std::size_t> out;
    for (const auto& [seg, k] : count) out.push_back(k);
    return out;
}

long read_long(const std::string& path) {
    std::ifstream f(path);
    long v = -1;
    f >> v;
    return f ? v : -1;
}

}  // namespace

std::vector<std::string> Lab::host_limit_warnings(bool all_pairs) const {
    // The neighbour (ARP/ND) table limit is shared by all namespaces of the host.
    long limit = read_long("/proc/sys/net/ipv4/neigh/default/gc_thresh3");
    if (limit <= 0) return {};
    std::size_t need = 0;
    if (all_pairs) {
        for (auto k : addressed_per_segment(topo_)) need += k * (k - 1);
    } else {
        need = 2 * topo_.checks.size();
    }
    if (need <= static_cast<std::size_t>(limit)) return {};
    return {"lab " + topo_.name + (all_pairs ? ": pinging all pairs needs about " : ": its checks need about ") +
            std::to_string(need) + " neighbour (ARP/ND) entries, and this host allows " + std::to_string(limit) +
            " for all namespaces together; pings beyond that are lost (\"neighbor table overflow\"). Raise "
            "net.ipv4.neigh.default.gc_thresh3 and net.ipv6.neigh.default.gc_thresh3 (with gc_thresh2 below "
            "them) to at least " + std::to_string(need + need / 4) + " first."};
}

bool down(const std::string& name) {
    if (!valid_lab_name(name)) throw LabError("\"" + name + "\" is not a lab name");
    require_privileges();
    state::LabLock lock(name);
    auto rec = state::Journal::load(name);
    if (!rec) return false;
    teardown(*rec);
    return true;
}

std::vector<std::string> down_all() {
    require_privileges();
    std::vector<std::string> removed, problems;
    for (const auto& name : state::Journal::list()) {
        if (!valid_lab_name(name)) continue;
        try {
            if (down(name)) removed.push_back(name);
        } catch (const std::exception& e) {
            problems.push_back(e.what());
        }
    }
    if (!problems.empty()) throw LabError(join(problems, "; "));
    return removed;
}

nlohmann::json status_all() {
    Json labs = Json::array();
    struct stat st {};
    if (::stat(state::state_root().c_str(), &st) != 0) return labs;
    for (const auto& name : state::Journal::list()) {
        auto rec = state::Journal::load(name);
        if (!rec) continue;
        Json j{{"name", name},
               {"state", rec->complete ? "up" : "incomplete"},
               {"nodes", rec->namespaces.size()},
               {"daemons", rec->daemons.size()},
               {"source", rec->source},
               {"started", rec->started}};
        labs.push_back(j);
    }
    return labs;
}

std::vector<KernelFeature> kernel_features() {
    require_privileges();
    using F = rtnl::Feature;
    const std::vector<std::pair<F, std::string>> all = {
        {F::veth, "links"},
        {F::bridge, "switches and bridge interfaces"},
        {F::tuntap, "tap and tun interfaces"},
        {F::netem, "link impairments (delay, jitter, loss, duplicate, reorder)"},
        {F::tbf, "rate limits (impair.rate_mbit alone)"},
        {F::vlan_8021q, "vlan interfaces"},
        {F::bridge_vlan_filtering, "switches with vlan_filtering"},
        {F::dummy, "dummy interfaces"}};
    std::vector<F> wanted;
    for (const auto& [f, use] : all) wanted.push_back(f);
    auto missing = rtnl::missing_features(wanted);
    std::vector<KernelFeature> out;
    for (const auto& [f, use] : all)
        out.push_back({rtnl::feature_name(f), rtnl::feature_config(f), use,
                       std::find(missing.begin(), missing.end(), f) == missing.end()});
    return out;
}

std::string lab_name_of(const std::string& arg) {
    struct stat st {};
    if (::stat(arg.c_str(), &st) == 0 && S_ISREG(st.st_mode)) {
        // Oversized files are refused as load_file refuses them, before being read.
        if (static_cast<std::size_t>(st.st_size) > kMaxFileBytes) return load_file(arg).name;
        // The name only: `down` of a lab whose file has since become invalid must work.
        Json doc = Json::parse(read_text_file(arg), nullptr, false);
        if (doc.is_object() && doc.contains("name") && doc["name"].is_string() &&
            valid_lab_name(doc["name"].get<std::string>()))
            return doc["name"].get<std::string>();
        return load_file(arg).name;  // throws TopologyError saying what is wrong
    }
    if (valid_lab_name(arg)) return arg;
    throw TopologyError(arg, {{"", "neither a topology file nor a lab name"}});
}

}  // namespace labctl::engine
