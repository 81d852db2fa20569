#include "engine/lab.hpp"

#include <linux/capability.h>
#include <net/if_arp.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <set>
#include <tuple>
#include <regex>
#include <sstream>
#include <thread>
#include <sys/stat.h>

#include "base/error.hpp"
#include "engine/node_command.hpp"
#include "engine/teardown.hpp"
#include "engine/ready.hpp"
#include "netns/netns.hpp"
#include "proc/proc.hpp"
#include "engine/internal.hpp"
#include "plan/plan.hpp"
#include "realize/realize.hpp"
#include "rtnl/rtnl.hpp"
#include "state/state.hpp"
#include "topology/load.hpp"
#include "userns/userns.hpp"

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
    r.kind = CheckKind::ping;
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
    r.attempts = std::max(p.attempts, 1);
    r.name = from + " -> " + to;
    r.ok = expect == Expect::reachable ? p.received > 0 : p.received == 0;
    return r;
}

// Whether a command check's run holds, and if not, why.
std::string command_failure(const Check& c, const std::regex* expect_stdout, const proc::BatchResult& b) {
    const proc::RunResult& r = b.result;
    if (!b.start_error.empty()) return b.start_error;
    if (r.timed_out) return "ran longer than " + std::to_string(c.timeout_ms) + " ms (killed)";
    if (r.returncode < 0) return "killed by signal " + std::to_string(-r.returncode);
    if (r.returncode != c.expect_exit)
        return "exited with " + std::to_string(r.returncode) + ", expected " + std::to_string(c.expect_exit);
    if (expect_stdout && !std::regex_search(r.out, *expect_stdout))
        return "stdout does not match /" + *c.expect_stdout + "/";
    return "";
}

// Runs the command checks (with their retries) from one event loop. Throws like proc::run_batch.
std::vector<CheckResult> run_command_checks(const Topology& topo, const std::vector<const Check*>& checks,
                                            const std::vector<netns::NetnsHandle>& ns) {
    std::vector<std::optional<std::regex>> patterns;
    patterns.reserve(checks.size());
    std::vector<proc::BatchJob> jobs;
    for (const Check* c : checks) {
        patterns.push_back(c->expect_stdout ? std::optional<std::regex>(std::regex(*c->expect_stdout, kExpectStdoutSyntax)) : std::nullopt);
        const std::regex* re = patterns.back() ? &*patterns.back() : nullptr;
        const Node& node = topo.nodes[c->on_node];
        proc::BatchJob job;
        job.command = proc::Command{node.netns, c->run, {}, ns[c->on_node].fd.get(), node.name};
        job.timeout = std::chrono::milliseconds(c->timeout_ms);
        job.retry_for = std::chrono::milliseconds(static_cast<long long>(c->within_s * 1000));
        job.holds = [c, re](const proc::RunResult& r) { return command_failure(*c, re, {r, 1, {}}).empty(); };
        jobs.push_back(std::move(job));
    }
    auto batch = proc::run_batch(jobs);
    std::vector<CheckResult> out;
    for (std::size_t i = 0; i < checks.size(); ++i) {
        const Check& c = *checks[i];
        const auto& b = batch[i];
        CheckResult r;
        r.kind = CheckKind::command;
        r.name = c.label();
        r.named = !c.name.empty();
        r.points = c.points;
        r.attempts = b.attempts;
        r.from = c.from_text;
        r.to = c.to_text;
        r.run = c.run;
        r.expect_exit = c.expect_exit;
        r.expect_stdout = c.expect_stdout;
        if (b.start_error.empty() && !b.result.timed_out && b.result.returncode >= 0) r.returncode = b.result.returncode;
        r.reason = command_failure(c, patterns[i] ? &*patterns[i] : nullptr, b);
        r.ok = r.reason.empty();
        r.output = tail(b.result.out + b.result.err, 20);
        out.push_back(std::move(r));
    }
    return out;
}

// Building holds a namespace fd and a netlink socket per node at once (plus a few of
// our own); the checks after it the same and the pinger's ICMP sockets
// (per source node and family: one unbound, one per interface it sends out of). Refuse,
// before anything is touched, a lab that cannot fit the fd limit, instead of failing
// half-way with EMFILE and rolling back (or, in the checks, leaving the lab up).
void require_fd_budget(const Topology& topo, bool verify) {
    constexpr rlim_t kSpare = 64;
    const rlim_t nodes = topo.nodes.size();
    rlim_t need = 2 * nodes + kSpare;
    std::set<std::tuple<std::size_t, int, std::string>> sockets;
    if (verify) {
        for (const auto& c : topo.checks) {
            sockets.emplace(c.from_node, c.to.family, "");
            if (c.from_interface)
                sockets.emplace(c.from_node, c.to.family,
                                topo.nodes[c.from_node].interfaces[*c.from_interface].name);
        }
        // Namespaces, and a netlink socket each when the checks run in waves (run_paced).
        need = std::max<rlim_t>(need, 2 * nodes + sockets.size() + kSpare);
    }
    struct rlimit rl {};
    if (::getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur >= need) return;
    throw LabError("lab " + topo.name + " has " + std::to_string(topo.nodes.size()) + " nodes" +
                       (sockets.empty() ? "" : " and checks from " + std::to_string(sockets.size()) + " ICMP sockets") +
                       " and needs about " + std::to_string(need) +
                       " open files (a namespace and a netlink socket per node, and the checks' sockets), "
                       "but this process may open only " +
                       std::to_string(rl.rlim_cur) + " (RLIMIT_NOFILE); raise the limit (ulimit -n " +
                       std::to_string(need) + ") and run it again. Nothing was touched",
                   EMFILE);
}

// Free entries of the host-wide neighbour table of `proto` ("arp_cache", "ndisc_cache"):
// gc_thresh3 minus the entries of every namespace (/proc/net/stat/<proto>, first column,
// hex; the table is global, so any namespace's file shows it). Read only, never changed.
long neighbour_room(const std::string& proto, const std::string& family) {
    long limit = -1;
    {
        std::ifstream f("/proc/sys/net/" + family + "/neigh/default/gc_thresh3");
        f >> limit;
        if (!f) return -1;
    }
    std::ifstream stat("/proc/net/stat/" + proto);
    std::string header, entries;
    if (!std::getline(stat, header) || !(stat >> entries)) return -1;
    return limit - std::stol(entries, nullptr, 16);
}

// Runs the probes in waves that keep the lab's neighbour entries within what is free of
// the host's table (a probe makes at most two: the source learns its next hop, which
// learns the source), flushing the lab's own namespaces between waves. One wave, as
// before, when everything fits.
std::vector<ping::ProbeResult> run_paced(const std::vector<ping::Probe>& probes,
                                         const std::vector<netns::NetnsHandle>& lab_namespaces) {
    long room = std::numeric_limits<long>::max();
    for (const auto& [proto, family] : {std::pair{"arp_cache", "ipv4"}, std::pair{"ndisc_cache", "ipv6"}}) {
        const long r = neighbour_room(proto, family);
        if (r >= 0) room = std::min(room, r);
    }
    // Others on the host need entries too: a quarter of what is free stays theirs.
    const std::size_t per_wave = static_cast<std::size_t>(std::max(8L, room - room / 4) / 2);
    if (probes.size() <= per_wave) return ping::run(probes);
    std::vector<const netns::NetnsHandle*> each;
    for (const auto& ns : lab_namespaces) each.push_back(&ns);
    auto handles = rtnl::Handle::open_in_each(each);
    std::vector<ping::ProbeResult> results;
    results.reserve(probes.size());
    for (std::size_t first = 0; first < probes.size(); first += per_wave) {
        if (first > 0)
            for (auto& h : handles) rtnl::neigh_flush(h);
        const std::size_t last = std::min(probes.size(), first + per_wave);
        auto wave = ping::run(std::vector<ping::Probe>(probes.begin() + static_cast<long>(first),
                                                        probes.begin() + static_cast<long>(last)));
        for (auto& r : wave) results.push_back(std::move(r));
    }
    return results;
}

}  // namespace

nlohmann::json to_json(const CheckResult& r) {
    // The field names of Python's CheckResult; RTTs are null without a reply.
    auto rtt = [&](double v) { return r.received ? Json(v) : Json(nullptr); };
    Json j{{"name", r.name},          {"points", r.points},    {"attempts", r.attempts},
           {"kind", to_string(r.kind)}, {"src", r.from},       {"dst", r.to},
           {"address", r.address},      {"expect", to_string(r.expect)}, {"ok", r.ok},
           {"sent", r.sent},            {"received", r.received}, {"rtt_min_ms", rtt(r.rtt_min)},
           {"rtt_avg_ms", rtt(r.rtt_avg)}, {"rtt_max_ms", rtt(r.rtt_max)}, {"reason", r.reason}};
    if (r.kind == CheckKind::tcp) j["port"] = r.port;
    if (r.kind == CheckKind::command) {
        j.erase("address");
        for (const char* key : {"sent", "received", "rtt_min_ms", "rtt_avg_ms", "rtt_max_ms", "expect"}) j.erase(key);
        j["on"] = r.from;
        j["run"] = r.run;
        j["expect_exit"] = r.expect_exit;
        j["expect_stdout"] = r.expect_stdout ? Json(*r.expect_stdout) : Json(nullptr);
        j["returncode"] = r.returncode ? Json(*r.returncode) : Json(nullptr);
        j["output"] = r.output;
    }
    return j;
}

Score score_of(const std::vector<CheckResult>& checks) {
    Score s;
    for (const auto& c : checks) {
        s.max_score += c.points;
        if (c.ok) s.score += c.points;
        if (c.points != 1) s.any_weighted = true;
    }
    return s;
}

bool UpResult::checks_ok() const {
    return std::all_of(checks.begin(), checks.end(), [](const CheckResult& c) { return c.ok; });
}

std::atomic<bool>& interrupt_flag() {
    static std::atomic<bool> flag{false};
    return flag;
}

void require_privileges() {
    // Without privileges labctl runs in a user namespace of the caller's (userns/); when
    // that could not be entered, its reason is the one to give.
    if (!userns::join_error().empty()) throw LabError(userns::join_error(), EPERM);
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
        throw UsageError("\"" + instance + "\" is not a lab name (^[a-z][a-z0-9-]{0,15}$)", EINVAL);
    rename(topo_, instance);
    instance_ = true;
    // The saved copy names the lab it runs as: attach refuses a copy naming another lab.
    Json doc = Json::parse(text_, nullptr, false);
    if (doc.is_object()) {
        doc["name"] = instance;
        text_ = doc.dump(2);
    }
}

Lab Lab::from_file(const std::string& path, const std::string& instance) {
    // Read once: what is saved in the state directory is exactly what was validated.
    std::string text = read_topology_file(path);
    Topology t = load_text(text, path);
    Lab lab(std::move(t), std::move(text), instance);
    // Node commands run in the file's folder (node_command.hpp).
    std::error_code ec;
    auto folder = std::filesystem::absolute(std::filesystem::path(path), ec).parent_path();
    if (!ec) lab.folder_ = folder.string();
    return lab;
}

Lab Lab::from_text(const std::string& text, const std::string& source, const std::string& instance) {
    return Lab(load_text(text, source), text, instance);
}

Lab Lab::attach(const std::string& name) {
    if (!valid_lab_name(name)) throw UsageError("\"" + name + "\" is not a lab name");
    auto rec = state::Journal::load(name);
    if (!rec || !rec->complete) throw UsageError("lab " + name + " is not up");
    std::string text = state::Journal::topology_text(name);
    Lab lab(load_saved_text(text, state::state_root() + "/" + name + "/topology.json"), text);
    // The saved copy must describe this lab: anything else would aim ping/exec/verify
    // at another lab's namespaces (an instance's copy carries the instance's name).
    if (lab.name() != name)
        throw LabError("the saved topology of lab " + name + " is lab " + lab.name() + "'s; refusing to use it");
    // Node commands a runtime change runs (node start) run where `up` ran them: the
    // folder of the file the lab was built from (source is an absolute path; "" from text).
    if (!rec->source.empty() && rec->source.front() == '/')
        lab.folder_ = std::filesystem::path(rec->source).parent_path().string();
    return lab;
}

std::string Lab::journal_source() const {
    // The journal keeps the file's absolute path: a later `node start` runs the node's
    // commands in its folder, whatever the caller's working directory.
    std::string source = topo_.source;
    if (!folder_.empty() && !source.empty())
        source = (std::filesystem::path(folder_) / std::filesystem::path(source).filename()).string();
    return source;
}

bool Lab::is_up() const {
    auto rec = state::Journal::load(topo_.name);
    return rec && rec->complete;
}

bool Lab::runs_this_topology() const {
    if (!is_up()) return false;
    if (text_.empty()) return true;
    // The same document, whatever its spacing and key order; the name is the lab's.
    Json ours = Json::parse(text_, nullptr, false);
    Json theirs = Json::parse(state::Journal::topology_text(topo_.name), nullptr, false);
    if (ours.is_object()) ours.erase("name");
    if (theirs.is_object()) theirs.erase("name");
    return !ours.is_discarded() && ours == theirs;
}

const Node& Lab::node(const std::string& name) const {
    auto n = topo_.find_node(name);
    if (!n) throw UsageError("lab " + topo_.name + " has no node \"" + name + "\"");
    return topo_.nodes[*n];
}

UpResult Lab::up(bool verify) {
    require_privileges();
    raise_fd_limit();
    require_fd_budget(topo_, verify);
    // Missing kernel features are found before anything of the lab is touched.
    auto missing = rtnl::missing_features(realize::features_needed(topo_));
    if (!missing.empty()) {
        std::vector<std::string> why;
        for (auto f : missing) why.push_back(rtnl::missing_feature_message(f));
        throw LabError("lab " + topo_.name + " cannot be built here: " + join(why, "; "), EOPNOTSUPP);
    }
    // Rootless: the user namespace maps the caller's uid alone (as root); nobody else exists.
    if (userns::active())
        for (const auto& n : topo_.nodes)
            if (!n.user.empty())
                throw LabError("lab " + topo_.name + " cannot be built rootless: node " + n.name +
                                   " runs as user \"" + n.user +
                                   "\", and a rootless lab has only your own uid (root inside, without "
                                   "\"user\"); run it as root",
                               EOPNOTSUPP);
    if (text_.empty()) text_ = "{}";

    UpResult result;
    state::LabLock lock(topo_.name, &interrupt_flag());
    if (auto rec = state::Journal::load(topo_.name)) {
        if (rec->complete)
            throw LabError("lab " + topo_.name + " is already up; run `labctl down " + topo_.name + "` first",
                           EEXIST);
        detail::teardown(*rec, detail::ForeignNames::report);
        result.notes.push_back("removed the leftovers of an interrupted `up` of lab " + topo_.name);
    }
    // Two labs whose namespace names meet (lab a node b-c, lab a-b node c) cannot both be
    // up. Refused here before anything is touched; when both race past this check, the
    // kernel's exclusive creation of the name decides (netns::create_many).
    auto name_taken = [&](const std::string& netns) {
        std::string owner = detail::owner_of(netns, topo_.name);
        return LabError("namespace " + netns + " already exists and is not part of lab " + topo_.name +
                            (owner.empty() ? std::string(" (labctl never touches it); remove it or rename the lab")
                                           : ": it belongs to lab " + owner +
                                                 " (two labs whose namespace names meet cannot both be up); "
                                                 "take lab " + owner + " down or rename one of them"),
                        EEXIST);
    };
    for (const auto& n : topo_.nodes)
        if (netns::exists(n.netns)) throw name_taken(n.netns);

    auto journal = state::Journal::begin(topo_.name, journal_source(), text_);
    // up = plan(file, nothing): every operation of the lab, executed stage by stage.
    const plan::Plan p = plan::plan(topo_, plan::Observed{});
    realize::Options options;
    options.link_timeout = kLinkTimeout;
    options.cancel = &interrupt_flag();
    std::vector<detail::StartedDaemon> started;
    // Undoes only what this process made: the journal holds the identities it recorded.
    auto undo_all = [&] {
        if (auto rec = state::Journal::load(topo_.name)) detail::teardown(*rec, detail::ForeignNames::quiet);
    };
    try {
        try {
            realize::execute(topo_, p, journal, make_hooks(topo_, journal, folder_, &started), options);
        } catch (const KernelError& e) {
            if (e.errno_value() != EEXIST) throw;
            // Another lab (or `ip netns add`) made one of the names first.
            for (const auto& n : topo_.nodes)
                if (std::string(e.what()).find("\"" + n.netns + "\"") != std::string::npos) throw name_taken(n.netns);
            throw;
        }
        detail::wait_for_started(topo_, started);
    } catch (const std::exception& e) {
        // Remove what was built; a failure to do so is said with the failure itself.
        std::string undo_error;
        try {
            undo_all();
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
    // Exit 3 means nothing is left: a failure from here on (a full disk for the last
    // record, EMFILE in the checks) removes the lab too.
    try {
        journal.complete();
        if (verify) result.checks = this->verify(false);
    } catch (const std::exception& e) {
        try {
            undo_all();
        } catch (const std::exception& undo) {
            throw LabError(std::string(e.what()) + "; and while removing the lab: " + undo.what());
        }
        throw;
    }
    return result;
}

std::vector<CheckResult> Lab::verify(bool all_pairs) {
    if (!is_up()) throw UsageError("lab " + topo_.name + " is not up");
    raise_fd_limit();
    // A node whose namespace is gone (ip netns del) is missing: the checks that involve
    // it fail, the others run.
    std::vector<netns::NetnsHandle> ns(topo_.nodes.size());
    std::vector<bool> missing(topo_.nodes.size(), false);
    for (std::size_t i = 0; i < topo_.nodes.size(); ++i) {
        try {
            if (netns::identity(topo_.nodes[i].netns)) ns[i] = netns::open(topo_.nodes[i].netns);
            else missing[i] = true;
        } catch (const KernelError& e) {
            if (e.errno_value() != ENOENT) throw;
            missing[i] = true;
        }
    }
    auto missing_reason = [&](std::size_t n) {
        return "node " + topo_.nodes[n].name + " is missing (namespace " + topo_.nodes[n].netns + " is gone)";
    };
    // The node an address belongs to, for checks aimed at a literal address.
    auto owner = [&](const IpAddress& a) -> std::optional<std::size_t> {
        for (std::size_t n = 0; n < topo_.nodes.size(); ++n)
            for (const auto& iface : topo_.nodes[n].interfaces)
                for (const auto& p : iface.addresses)
                    if (p.address == a) return n;
        return std::nullopt;
    };

    struct Want {
        std::string from, to;
        IpAddress addr;
        Expect expect;
        std::string failed;  // not probed: why it fails
    };
    std::vector<ping::Probe> probes;
    std::vector<Want> wants;
    auto add = [&](std::size_t from, std::optional<std::size_t> to, Want want, const ping::Probe& p) {
        if (missing[from]) want.failed = missing_reason(from);
        else if (to && missing[*to]) want.failed = missing_reason(*to);
        else probes.push_back(p);
        wants.push_back(std::move(want));
    };
    std::vector<const Check*> commands;
    if (!all_pairs) {
        for (const auto& c : topo_.checks) {
            if (c.kind == CheckKind::command) {
                if (!missing[c.on_node]) commands.push_back(&c);
                continue;
            }
            ping::Probe p;
            if (c.kind == CheckKind::tcp) {
                p.protocol = ping::Protocol::tcp;
                p.port = c.port;
            }
            p.netns_fd = ns[c.from_node].fd.get();
            p.netns_name = topo_.nodes[c.from_node].netns;
            if (c.from_interface) p.bind_ifname = topo_.nodes[c.from_node].interfaces[*c.from_interface].name;
            p.destination = c.to;
            p.count = c.count;
            p.timeout = std::chrono::milliseconds(c.timeout_ms);
            p.stop_at_first_reply = true;
            p.retry_for = std::chrono::milliseconds(static_cast<long long>(c.within_s * 1000));
            p.want_answer = c.expect == Expect::reachable;
            add(c.from_node, c.to_node ? c.to_node : owner(c.to), {c.from_text, c.to_text, c.to, c.expect, {}}, p);
        }
    } else {
        // Every ordered pair, in every family both nodes have an address of (IPv4 first):
        // a dual-stack pair is pinged on IPv4 and on IPv6. A node without addresses (a
        // switch) sends and receives nothing.
        for (std::size_t a = 0; a < topo_.nodes.size(); ++a) {
            for (std::size_t b = 0; b < topo_.nodes.size(); ++b) {
                if (a == b) continue;
                for (int family : {AF_INET, AF_INET6}) {
                    if (!topo_.nodes[a].first_address(family)) continue;
                    auto addr = topo_.nodes[b].first_address(family);
                    if (!addr) continue;
                    ping::Probe p;
                    p.netns_fd = ns[a].fd.get();
                    p.netns_name = topo_.nodes[a].netns;
                    p.destination = *addr;
                    add(a, b, {topo_.nodes[a].name, topo_.nodes[b].name, *addr, Expect::reachable, {}}, p);
                }
            }
        }
    }
    // Command checks run on a thread of their own, alongside the pings: two event loops.
    std::vector<CheckResult> command_results;
    std::exception_ptr command_failure;
    std::jthread command_thread;
    if (!commands.empty())
        command_thread = std::jthread([&] {
            try {
                command_results = run_command_checks(topo_, commands, ns);
            } catch (...) {
                command_failure = std::current_exception();
            }
        });
    std::vector<ping::ProbeResult> results;
    try {
        results = run_paced(probes, ns);
    } catch (...) {
        if (command_thread.joinable()) command_thread.join();
        throw;
    }
    if (command_thread.joinable()) command_thread.join();
    if (command_failure) std::rethrow_exception(command_failure);

    auto result_of = [&](const Want& w, std::size_t& next) {
        if (w.failed.empty()) return to_check_result(w.from, w.to, w.addr, w.expect, results[next++]);
        CheckResult r;
        r.from = w.from;
        r.to = w.to;
        r.address = w.addr.to_string();
        r.expect = w.expect;
        r.ok = false;
        r.reason = w.failed;
        r.name = w.from + " -> " + w.to;
        return r;
    };
    std::vector<CheckResult> out;
    out.reserve(wants.size() + commands.size());
    std::size_t next_probe = 0;
    if (!all_pairs) {
        // In file order.
        std::size_t next_want = 0, next_command = 0;
        for (const auto& c : topo_.checks) {
            if (c.kind == CheckKind::command) {
                if (missing[c.on_node]) {
                    CheckResult r;
                    r.kind = CheckKind::command;
                    r.from = c.from_text;
                    r.to = c.to_text;
                    r.run = c.run;
                    r.expect_exit = c.expect_exit;
                    r.expect_stdout = c.expect_stdout;
                    r.reason = missing_reason(c.on_node);
                    out.push_back(std::move(r));
                } else {
                    out.push_back(std::move(command_results[next_command++]));
                }
            } else {
                out.push_back(result_of(wants[next_want++], next_probe));
                out.back().kind = c.kind;
                out.back().port = c.port;
            }
            out.back().name = c.label();
            out.back().named = !c.name.empty();
            out.back().points = c.points;
        }
        return out;
    }
    for (const auto& w : wants) {
        out.push_back(result_of(w, next_probe));
    }
    return out;
}

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
        if (!addr) throw UsageError(to + " has no " + (family == 4 ? "IPv4 " : family == 6 ? "IPv6 " : "") + "address to ping");
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

nlohmann::json Lab::status() const {
    Json out{{"name", topo_.name}, {"description", topo_.description}};
    auto rec = state::Journal::load(topo_.name);
    out["up"] = rec && rec->complete;
    out["state"] = !rec ? "down" : rec->complete ? "up" : "incomplete";
    if (rec) {
        out["source"] = rec->source;
        out["started"] = rec->started;
        out["state_dir"] = state::state_root() + "/" + topo_.name;
        if (auto lost = userns::keeper_lost(state::state_root() + "/" + topo_.name))
            out["keeper_lost"] = *lost;
    }
    Json nodes = Json::array();
    std::size_t missing = 0;
    std::map<std::string, std::uint32_t> mtus;  // "node:ifname" -> the interface's mtu now
    for (const auto& node : topo_.nodes) {
        Json jn{{"name", node.name}, {"kind", to_string(node.kind)}, {"namespace", node.netns}};
        Json ifaces = Json::array();
        bool present = rec && netns::identity(node.netns).has_value();
        jn["present"] = present;
        // A namespace removed behind labctl's back (ip netns del) leaves the node missing.
        jn["state"] = !rec ? "down" : present ? "up" : "missing";
        if (rec && !present) ++missing;
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
                    // tun devices and lo have no MAC address (ARPHRD_NONE, ARPHRD_LOOPBACK).
                    Json mac = l.type == ARPHRD_ETHER ? Json(mac_to_string(l.mac)) : Json(nullptr);
                    Json ji{{"name", l.name},
                            {"kind", l.kind.empty() ? (l.name == "lo" ? "loopback" : "") : l.kind},
                            {"state", l.operstate < 7 ? oper[l.operstate] : "unknown"},
                            {"mtu", l.mtu},
                            {"mac", mac},
                            {"addresses", addresses}};
                    if (!master.empty()) ji["master"] = master;
                    mtus[node.name + ":" + l.name] = l.mtu;
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
                    Json jd{{"argv", d.argv}, {"pid", d.pid}, {"running", alive}, {"log", d.log},
                            {"state", alive ? "running" : "exited"}, {"exit_status", nullptr}, {"signal", nullptr}};
                    if (!alive)
                        if (auto st = proc::daemon_exit_status(d.log)) {
                            if (*st >= 0) jd["exit_status"] = *st;
                            else jd["signal"] = -*st;
                        }
                    daemons.push_back(jd);
                }
        jn["daemons"] = daemons;
        nodes.push_back(jn);
    }
    out["nodes"] = nodes;
    if (rec && rec->complete && missing) out["state"] = "degraded";
    Json links = Json::array();
    for (const auto& l : topo_.links) {
        std::string a = topo_.end_name(l.ends[0]), b = topo_.end_name(l.ends[1]);
        Json mtu = l.mtu ? Json(*l.mtu) : Json(nullptr);
        if (auto it = mtus.find(a); it != mtus.end()) mtu = it->second;
        Json impair = Json::object();
        auto put = [&](const char* key, const std::optional<double>& v) {
            if (v) impair[key] = *v;
        };
        put("delay_ms", l.impair.delay_ms);
        put("jitter_ms", l.impair.jitter_ms);
        put("loss_pct", l.impair.loss_pct);
        put("rate_mbit", l.impair.rate_mbit);
        put("duplicate_pct", l.impair.duplicate_pct);
        put("reorder_pct", l.impair.reorder_pct);
        links.push_back({{"endpoints", {a, b}}, {"mtu", mtu}, {"impair", impair}});
    }
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
        // Pings and TCP checks resolve neighbours; command checks do not (as far as we know).
        for (const auto& c : topo_.checks)
            if (c.kind != CheckKind::command) need += 2;
    }
    if (need <= static_cast<std::size_t>(limit)) return {};
    return {"lab " + topo_.name + (all_pairs ? ": pinging all pairs needs about " : ": its checks need about ") +
            std::to_string(need) + " neighbour (ARP/ND) entries, and this host allows " + std::to_string(limit) +
            " for all namespaces together (gc_thresh3); labctl pings in waves that fit what is free of it and "
            "flushes the lab's own entries between waves, which takes longer. Raise "
            "net.ipv4.neigh.default.gc_thresh3 and net.ipv6.neigh.default.gc_thresh3 (with gc_thresh2 below "
            "them) to at least " + std::to_string(need + need / 4) + " to ping in one wave."};
}

bool down(const std::string& name) {
    if (!valid_lab_name(name)) throw UsageError("\"" + name + "\" is not a lab name");
    require_privileges();
    state::LabLock lock(name);
    auto rec = state::Journal::load(name);
    if (!rec) return false;
    detail::teardown(*rec, detail::ForeignNames::report);
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
        // A lab whose namespace was removed behind labctl's back is degraded.
        bool missing = rec->complete && std::any_of(rec->namespaces.begin(), rec->namespaces.end(), [](const auto& ns) {
                           return !netns::identity(ns.name).has_value();
                       });
        Json j{{"name", name},
               {"state", !rec->complete ? "incomplete" : missing ? "degraded" : "up"},
               {"nodes", rec->namespaces.size()},
               {"daemons", rec->daemons.size()},
               {"source", rec->source},
               {"started", rec->started}};
        if (auto lost = userns::keeper_lost(state::state_root() + "/" + name)) j["keeper_lost"] = *lost;
        labs.push_back(j);
    }
    return labs;
}

std::string state_directory() { return state::state_root(); }

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
        Json doc = Json::parse(read_topology_file(arg), nullptr, false);
        if (doc.is_object() && doc.contains("name") && doc["name"].is_string() &&
            valid_lab_name(doc["name"].get<std::string>()))
            return doc["name"].get<std::string>();
        return load_file(arg).name;  // throws TopologyError saying what is wrong
    }
    if (valid_lab_name(arg)) return arg;
    if (::stat(arg.c_str(), &st) != 0)  // not a lab name: it was meant as a file
        throw TopologyError(arg, {{"", "cannot read: " + describe_errno(errno) + " (and it is not a lab name)"}});
    throw TopologyError(arg, {{"", "neither a topology file nor a lab name"}});
}

}  // namespace labctl::engine
