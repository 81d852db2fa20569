// Operating a running lab: apply, runtime changes (link, impair, node), and what they share
// with up (the hooks realize::execute calls, observing the lab).

#include <net/if.h>
#include <sys/stat.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <fstream>
#include <thread>
#include <nlohmann/json.hpp>

#include "base/error.hpp"
#include "base/timing.hpp"
#include "engine/chunks.hpp"
#include "engine/internal.hpp"
#include "engine/node_command.hpp"
#include "engine/lab.hpp"
#include "netns/netns.hpp"
#include "proc/proc.hpp"
#include "rtnl/rtnl.hpp"
#include "topology/load.hpp"

namespace labctl::engine {

using namespace topology;
using Json = nlohmann::json;

namespace detail {

realize::Hooks make_hooks(const Topology& topo, state::Journal& journal, const std::string& folder,
                          std::vector<StartedDaemon>* started) {
    realize::Hooks h;
    h.stop_processes = [&topo, &journal](const std::string& node, bool all) {
        std::vector<std::string> problems;
        if (auto rec = state::Journal::load(topo.name)) {
            for (const auto& d : rec->daemons) {
                if (d.node != node) continue;
                try {
                    proc::stop({d.pid, d.start_time}, kStopGrace);
                } catch (const std::exception& e) {
                    problems.push_back(node + ": stopping daemon " + std::to_string(d.pid) + ": " + e.what());
                }
            }
        }
        journal.daemons_stopped(node);
        if (all) {
            if (auto id = netns::identity(topo.name + "-" + node)) proc::kill_all_in_any_netns({*id}, kStopGrace);
        }
        if (!problems.empty()) throw LabError(join(problems, "; "));
    };
    // Only what the journal recorded, by identity (as teardown does): a name that now
    // holds something else is left alone and reported.
    h.remove_namespaces = [&topo, &journal](const std::vector<std::string>& names) {
        auto rec = state::Journal::load(topo.name);
        std::vector<std::pair<std::string, netns::NetnsIdentity>> recorded;
        for (const auto& n : names) {
            if (!lab_namespace_name(topo.name, n))
                throw LabError("namespace " + n + " is not one of lab " + topo.name + "'s");
            if (!rec) continue;
            for (const auto& r : rec->namespaces)
                if (r.name == n)
                    recorded.emplace_back(n, netns::NetnsIdentity{r.dev, r.ino, r.cookie, r.file_dev, r.file_ino});
        }
        std::vector<std::string> failures;
        // A chunk at a time: its namespaces are held (so their dev/ino name them alone)
        // while the processes in them are stopped and their names removed.
        for_each_chunk(recorded.size(), namespaces_at_once(), [&](std::size_t first, std::size_t last) {
            const std::vector<std::pair<std::string, netns::NetnsIdentity>> part(
                recorded.begin() + static_cast<long>(first), recorded.begin() + static_cast<long>(last));
            auto found = netns::inspect_many(part);
            std::vector<proc::NetnsId> ids;
            std::vector<std::pair<std::string, netns::NetnsIdentity>> owned_here;
            for (std::size_t i = 0; i < found.size(); ++i) {
                if (found[i].found == netns::Found::ours) ids.emplace_back(part[i].second.dev, part[i].second.ino);
                if (found[i].found == netns::Found::ours || found[i].found == netns::Found::file_only)
                    owned_here.push_back(part[i]);
                if (found[i].found == netns::Found::foreign)
                    failures.push_back("namespace " + part[i].first + " is not the one labctl created (" +
                                       found[i].why + "); left alone");
            }
            proc::kill_all_in_any_netns(ids, kStopGrace);
            for (auto& f : netns::remove_owned_many(owned_here)) failures.push_back(std::move(f));
            // What is gone is no longer the lab's: a later runtime change, which trusts the
            // namespaces it does not read, must not see it.
            for (const auto& o : owned_here)
                if (!netns::exists(o.first)) journal.netns_removed(o.first);
        });
        if (!failures.empty()) throw LabError(join(failures, "; "));
    };
    h.run_exec = [&topo, &journal, folder](std::size_t n, int netns_fd) {
        const Node& node = topo.nodes[n];
        std::string logs = journal.log_dir();
        for (std::size_t i = 0; i < node.exec.size(); ++i) {
            auto cmd = node_command(node, node.exec[i].argv, netns_fd, folder);
            // Ctrl-C stops the command at once (then the caller rolls back); only the
            // output's tail is kept, in memory and in the log.
            auto res = proc::run(cmd, std::nullopt, std::chrono::milliseconds(kExecTimeout), &interrupt_flag(),
                                 kExecOutputKept);
            std::ofstream(logs + "/" + node.name + ".exec." + std::to_string(i) + ".log")
                << (res.dropped
                        ? "[labctl: the first " + std::to_string(res.dropped) + " bytes of output were dropped]\n"
                        : std::string())
                << res.out << res.err;
            if (res.timed_out || res.returncode != 0) {
                std::string what = res.timed_out ? "ran longer than 30 s"
                    : res.returncode < 0         ? "was killed by signal " + std::to_string(-res.returncode)
                                                 : "exited with " + std::to_string(res.returncode);
                std::string output = tail(res.out + res.err, 10);
                throw LabError(node.name + ": exec \"" + node.exec[i].display() + "\" " + what +
                               (output.empty() ? "" : "; its output ends:\n" + output));
            }
        }
    };
    h.start_daemons = [&topo, &journal, folder, started](std::size_t n, int netns_fd) {
        const Node& node = topo.nodes[n];
        std::string logs = journal.log_dir();
        for (std::size_t i = 0; i < node.daemons.size(); ++i) {
            std::string log = logs + "/" + node.name + ".daemon." + std::to_string(i) + ".log";
            auto cmd = node_command(node, node.daemons[i].argv, netns_fd, folder);
            struct stat before {};
            const std::uint64_t offset =
                ::stat(log.c_str(), &before) == 0 ? static_cast<std::uint64_t>(before.st_size) : 0;
            auto id = proc::start_daemon(cmd, log);
            journal.daemon_started({node.name, node.daemons[i].argv, id.pid, id.start_time, log});
            if (started) started->push_back({n, i, id, log, offset});
        }
    };
    return h;
}

void wait_for_started(const Topology& topo, const std::vector<StartedDaemon>& started) {
    if (started.empty()) return;
    // By node, in chunks of nodes: each chunk's namespaces (and its daemons' pidfds) are
    // held only while its daemons are waited for (their ready_timeout_s counts from then).
    std::vector<std::size_t> nodes;
    std::vector<bool> seen(topo.nodes.size(), false);
    for (const auto& d : started)
        if (!seen[d.node]) {
            seen[d.node] = true;
            nodes.push_back(d.node);
        }
    for_each_chunk(nodes.size(), namespaces_at_once(), [&](std::size_t first, std::size_t last) {
        std::vector<netns::NetnsHandle> held;
        std::vector<int> fds(topo.nodes.size(), -1);
        std::vector<StartedDaemon> part;
        for (std::size_t k = first; k < last; ++k) {
            held.push_back(netns::open(topo.nodes[nodes[k]].netns));
            fds[nodes[k]] = held.back().fd.get();
        }
        for (const auto& d : started)
            if (fds[d.node] >= 0) part.push_back(d);
        wait_until_ready(topo, fds, part);
    });
    // A daemon of an earlier chunk may have ended while a later one was waited for.
    if (nodes.size() > namespaces_at_once())
        for (const auto& d : started)
            if (!proc::is_same_process(d.id))
                throw LabError(topo.nodes[d.node].name + ": daemon \"" + topo.nodes[d.node].daemons[d.index].display() +
                               "\" " + describe_daemon_end(d.log) + " while labctl waited for the daemons to be ready");
}

}  // namespace detail

using namespace detail;

bool ApplyResult::checks_ok() const {
    return std::all_of(checks.begin(), checks.end(), [](const CheckResult& c) { return c.ok; });
}

namespace {

// The file a lab runs and an edited one are the same lab when their documents are equal
// but for the lab's name (an instance runs under its own).
bool same_document(const std::string& a, const std::string& b) {
    auto ja = Json::parse(a, nullptr, false), jb = Json::parse(b, nullptr, false);
    if (ja.is_discarded() || jb.is_discarded()) return false;
    if (ja.is_object()) ja.erase("name");
    if (jb.is_object()) jb.erase("name");
    return ja == jb;
}

Topology built_topology(const std::string& lab) {
    Timing timing("reading the topology the lab runs");
    std::string text = state::Journal::topology_text(lab);
    Topology t = load_saved_text(text, state::state_root() + "/" + lab + "/topology.json");
    rename(t, lab);
    return t;
}

}  // namespace

void Lab::require_same_topology() const {
    auto rec = state::Journal::load(topo_.name);
    if (!rec || !rec->complete) return;
    if (!same_document(state::Journal::topology_text(topo_.name), text_))
        throw RefusedError("lab " + topo_.name + " runs a different topology; apply it first (labctl apply " +
                           (topo_.source.empty() ? std::string("FILE") : topo_.source) +
                           (instance_ ? " --name " + topo_.name : std::string()) + ")");
}

ApplyResult Lab::apply(bool dry_run, bool verify,
                       const std::function<void(const std::vector<plan::Change>&)>& on_plan) {
    ApplyResult result;
    if (!dry_run) require_privileges();
    raise_fd_limit();
    if (text_.empty()) text_ = "{}";
    auto rec = state::Journal::load(topo_.name);
    if (!rec || !rec->complete) {
        result.changes = plan::plan(topo_, plan::Observed{}).changes;
        result.brought_up = true;
        if (on_plan) on_plan(result.changes);
        if (dry_run) return result;
        auto up_result = up(verify);
        result.checks = std::move(up_result.checks);
        result.notes = std::move(up_result.notes);
        return result;
    }
    std::optional<state::LabLock> lock;
    if (!dry_run) lock.emplace(topo_.name);
    rec = state::Journal::load(topo_.name);
    if (!rec || !rec->complete) throw LabError("lab " + topo_.name + " went down while apply waited for it");
    const Topology built = built_topology(topo_.name);
    const plan::Observed observed = observe(topo_.name, *rec, built, {}, true);
    const plan::Plan p = [&] {
        Timing timing("planning");
        return plan::plan(topo_, observed);
    }();
    result.changes = p.changes;
    if (on_plan) on_plan(result.changes);
    if (dry_run) return result;
    if (!p.empty()) {
        auto missing = rtnl::missing_features(realize::features_needed(topo_));
        if (!missing.empty()) {
            std::vector<std::string> why;
            for (auto f : missing) why.push_back(rtnl::missing_feature_message(f));
            throw LabError("lab " + topo_.name + " cannot be changed so here: " + join(why, "; "), EOPNOTSUPP);
        }
    }
    auto journal = state::Journal::reopen(topo_.name);
    realize::Options options;
    options.link_timeout = kLinkTimeout;
    std::vector<StartedDaemon> started;
    try {
        realize::execute(topo_, p, journal, make_hooks(topo_, journal, folder_, &started), options);
        wait_for_started(topo_, started);
    } catch (const std::exception& e) {
        // Back to the topology the lab ran: the reverse plan, from what is there now.
        std::string undo_error;
        try {
            auto now = state::Journal::load(topo_.name);
            plan::Observed after = observe(topo_.name, *now, built, {}, true);
            // What the kernel cannot show: a node's commands. Where the file changed them,
            // the new ones may be running (or the old ones stopped): the undo plan sees
            // them as changed and restarts the old daemons and runs the old exec again.
            for (auto& bn : after.built->nodes)
                if (auto n = topo_.find_node(bn.name)) {
                    const Node& now_node = topo_.nodes[*n];
                    bn.daemons = now_node.daemons;
                    bn.exec = now_node.exec;
                    bn.env = now_node.env;
                    bn.user = now_node.user;
                }
            const plan::Plan back = plan::plan(built, after, observed.runtime);
            realize::execute(built, back, journal, make_hooks(built, journal, folder_), options);
        } catch (const std::exception& u) {
            undo_error = u.what();
        }
        int err = 0;
        if (auto* k = dynamic_cast<const KernelError*>(&e)) err = k->errno_value();
        if (auto* l = dynamic_cast<const LabError*>(&e)) err = l->errno_value();
        // A message that ends with a daemon's output gets the outcome on a line of its own.
        const std::string what = e.what();
        const std::string sep = what.find('\n') != std::string::npos ? "\n" : "; ";
        throw LabError(
            what +
                (undo_error.empty() ? sep + "lab " + topo_.name + " is back to the topology it ran before"
                                    : sep + "and while returning to the topology it ran before: " + undo_error),
            err);
    }
    journal.topology_replaced(text_, journal_source());
    if (!observed.runtime.empty()) journal.runtime("");
    lock.reset();
    if (verify) result.checks = this->verify(false);
    return result;
}

std::vector<plan::Change> Lab::change_runtime(const std::function<plan::Runtime(plan::Runtime)>& edit,
                                              const std::vector<Touch>& touch) {
    require_privileges();
    state::LabLock lock(topo_.name);
    auto rec = state::Journal::load(topo_.name);
    if (!rec || !rec->complete) throw LabError("lab " + topo_.name + " is not up");
    const plan::Runtime runtime = edit(runtime_from_json(topo_, rec->runtime));
    const plan::Observed observed = observe(topo_.name, *rec, topo_, touch, false);
    const plan::Plan p = [&] {
        Timing timing("planning");
        return plan::plan(topo_, observed, runtime);
    }();
    if (p.empty() && runtime == observed.runtime) return p.changes;
    auto journal = state::Journal::reopen(topo_.name);
    // Written ahead: a change killed half-way is finished (or undone) by the next one, or by apply.
    journal.runtime(runtime_to_json(runtime));
    realize::Options options;
    options.link_timeout = kLinkTimeout;
    std::vector<StartedDaemon> started;
    try {
        realize::execute(topo_, p, journal, make_hooks(topo_, journal, folder_, &started), options);
        // A node started (or restarted) is on once its daemons are ready, as after up.
        wait_for_started(topo_, started);
    } catch (...) {
        try {
            auto now = state::Journal::load(topo_.name);
            const plan::Observed after = observe(topo_.name, *now, topo_, touch, false);
            realize::execute(topo_, plan::plan(topo_, after, observed.runtime), journal,
                             make_hooks(topo_, journal, folder_), options);
            journal.runtime(runtime_to_json(observed.runtime));
        } catch (const std::exception&) {}
        throw;
    }
    return p.changes;
}

namespace {

// The link `end` names, and what a change of it reads: its two ends.
std::pair<std::size_t, std::vector<Touch>> link_of(const Topology& topo, const std::string& end) {
    auto l = plan::find_link(topo, end);
    if (!l) throw UsageError("lab " + topo.name + " has no link with an end \"" + end + "\" (node:ifname)");
    std::vector<Touch> touch;
    for (const auto& e : topo.links[*l].ends) {
        const std::string& node = topo.nodes[e.node].name;
        const std::string& ifname = topo.interface(e).name;
        auto t = std::find_if(touch.begin(), touch.end(), [&](const Touch& x) { return x.node == node; });
        if (t == touch.end()) touch.push_back({node, {ifname}});
        else t->interfaces.push_back(ifname);
    }
    return {*l, touch};
}

}  // namespace

std::vector<plan::Change> Lab::link_state(const std::string& end, bool up) {
    auto [l, touch] = link_of(topo_, end);
    std::vector<std::string> ends;
    for (const auto& e : topo_.links[l].ends) ends.push_back(topo_.end_name(e));
    return change_runtime(
        [&](plan::Runtime rt) {
            for (const auto& e : ends) rt.links_down.erase(e);
            if (!up) rt.links_down.insert(end);
            return rt;
        },
        touch);
}

std::vector<plan::Change> Lab::impair(const std::string& end, const std::optional<Impairment>& impairment) {
    auto [l, touch] = link_of(topo_, end);
    if (impairment && impairment->any()) {
        auto missing = rtnl::missing_features(realize::features_needed(
            Topology{topo_.name, {}, {}, {}, {Link{topo_.links[l].ends, std::nullopt, *impairment}}, {}}));
        if (!missing.empty()) throw LabError(rtnl::missing_feature_message(missing.front()), EOPNOTSUPP);
    }
    const std::string key = plan::link_key(topo_, topo_.links[l]);
    Impairment want = impairment.value_or(Impairment{});
    const auto& file = topo_.links[l].impair;
    const bool as_file = want == file;
    return change_runtime(
        [&](plan::Runtime rt) {
            if (as_file) rt.impaired.erase(key);
            else rt.impaired[key] = want;
            return rt;
        },
        touch);
}

std::vector<plan::Change> Lab::node_power(const std::string& name, NodeAction action) {
    node(name);  // throws for an unknown node
    std::vector<plan::Change> changes;
    const std::vector<Touch> touch{{name, {}}};
    if (action == NodeAction::stop || action == NodeAction::restart) {
        changes = change_runtime(
            [&](plan::Runtime rt) {
                rt.nodes_stopped.insert(name);
                return rt;
            },
            touch);
    }
    if (action == NodeAction::start || action == NodeAction::restart) {
        auto more = change_runtime(
            [&](plan::Runtime rt) {
                rt.nodes_stopped.erase(name);
                return rt;
            },
            touch);
        changes.insert(changes.end(), more.begin(), more.end());
    }
    return changes;
}

}  // namespace labctl::engine
