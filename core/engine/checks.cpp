// Checks: verify (pings, TCP and command checks, paced to the host's neighbour table),
// and the results' scores and JSON.
#include <algorithm>
#include <exception>
#include <iterator>
#include <limits>
#include <optional>
#include <regex>
#include <thread>

#include "base/error.hpp"
#include "engine/chunks.hpp"
#include "engine/internal.hpp"
#include "engine/lab.hpp"
#include "netns/netns.hpp"
#include "proc/proc.hpp"
#include "rtnl/rtnl.hpp"

namespace labctl::engine {

using namespace topology;
using Json = nlohmann::json;

namespace {

using namespace detail;

CheckResult to_check_result(const std::string& from, const std::string& to, const IpAddress& addr, Expect expect,
                            const ping::ProbeResult& p) {
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

// Runs the command checks (with their retries) from one event loop. Each run opens its
// node's namespace by name as it starts and closes it once started (proc::Command's
// netns_fd -1), so only the commands running at once hold one. Throws like proc::run_batch.
std::vector<CheckResult> run_command_checks(const Topology& topo, const std::vector<const Check*>& checks) {
    std::vector<std::optional<std::regex>> patterns;
    patterns.reserve(checks.size());
    std::vector<proc::BatchJob> jobs;
    for (const Check* c : checks) {
        patterns.push_back(c->expect_stdout
                               ? std::optional<std::regex>(std::regex(*c->expect_stdout, kExpectStdoutSyntax))
                               : std::nullopt);
        const std::regex* re = patterns.back() ? &*patterns.back() : nullptr;
        const Node& node = topo.nodes[c->on_node];
        proc::BatchJob job;
        job.command = proc::Command{node.netns, c->run, {}, -1, node.name};
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
        if (b.start_error.empty() && !b.result.timed_out && b.result.returncode >= 0)
            r.returncode = b.result.returncode;
        r.reason = command_failure(c, patterns[i] ? &*patterns[i] : nullptr, b);
        r.ok = r.reason.empty();
        r.output = tail(b.result.out + b.result.err, 20);
        out.push_back(std::move(r));
    }
    return out;
}

// Removes the lab's neighbour entries in every namespace of `names` that still exists,
// holding a chunk of namespaces (an fd and a netlink socket each) at a time.
// Throws KernelError.
// Whether a node may forward packets: a router, or a node whose sysctls turn
// forwarding on (net.ipv4.ip_forward, net.ipv6.conf.*.forwarding).
bool forwards(const Node& node) {
    if (node.kind == NodeKind::router) return true;
    for (const auto& [key, value] : node.sysctls)
        if (key.find("forward") != std::string::npos && value != "0") return true;
    return false;
}

void flush_neighbours(const std::vector<std::string>& names) {
    for_each_chunk(names.size(), namespaces_at_once(), [&](std::size_t first, std::size_t last) {
        std::vector<netns::NetnsHandle> chunk;
        for (std::size_t i = first; i < last; ++i) {
            try {
                chunk.push_back(netns::open(names[i]));
            } catch (const KernelError& e) {
                if (e.errno_value() != ENOENT) throw;  // gone meanwhile: nothing to flush
            }
        }
        std::vector<const netns::NetnsHandle*> each;
        for (const auto& ns : chunk) each.push_back(&ns);
        for (auto& h : rtnl::Handle::open_in_each(each)) rtnl::neigh_flush(h);
    });
}

// Runs the probes (probes[i] sent from node sources[i] to node dests[i], when the lab
// has that address) in waves, in order, and returns their results in order. A wave
// opens its sources' namespaces, runs, and closes them: it holds at most half the fd
// limit (namespaces_at_once, probe_waves), however many nodes send. The waves also keep
// the lab's neighbour entries within what is free of the host's table (a probe makes
// at most two: the source learns its next hop, which learns the source): once that
// many probes ran, the namespaces they could have added entries to are flushed before
// the next wave: their sources, destinations and the nodes that forward (`relays`),
// not the whole lab (a lab of 10,000 under a nearly full table flushes in every wave).
// Throws KernelError, and like ping::run.
std::vector<ping::ProbeResult> run_paced(const Topology& topo, std::vector<ping::Probe> probes,
                                         const std::vector<std::size_t>& sources,
                                         const std::vector<std::optional<std::size_t>>& dests,
                                         const std::vector<std::size_t>& relays) {
    long room = std::numeric_limits<long>::max();
    for (const auto& [proto, family] : {std::pair{"arp_cache", "ipv4"}, std::pair{"ndisc_cache", "ipv6"}}) {
        const long r = neighbour_room(proto, family);
        if (r >= 0) room = std::min(room, r);
    }
    // Others on the host need entries too: a quarter of what is free stays theirs.
    const std::size_t per_flush = static_cast<std::size_t>(std::max(8L, room - room / 4) / 2);
    std::vector<ProbeCost> costs;
    costs.reserve(probes.size());
    for (std::size_t i = 0; i < probes.size(); ++i)
        costs.push_back({sources[i], probes[i].destination.family, probes[i].bind_ifname,
                         probes[i].protocol == ping::Protocol::tcp});
    std::vector<ping::ProbeResult> results;
    results.reserve(probes.size());
    std::size_t first = 0, since_flush = 0;
    std::vector<bool> touched(topo.nodes.size(), false);
    for (std::size_t n : relays) touched[n] = true;
    for (const std::size_t last : probe_waves(costs, 2 * namespaces_at_once(), per_flush)) {
        if (since_flush + (last - first) > per_flush) {
            std::vector<std::string> flush;
            for (std::size_t n = 0; n < touched.size(); ++n)
                if (touched[n]) flush.push_back(topo.nodes[n].netns);
            flush_neighbours(flush);
            since_flush = 0;
            touched.assign(touched.size(), false);
            for (std::size_t n : relays) touched[n] = true;
        }
        for (std::size_t i = first; i < last; ++i) {
            touched[sources[i]] = true;
            if (dests[i]) touched[*dests[i]] = true;
        }
        std::vector<netns::NetnsHandle> held;
        std::vector<int> fd_of(topo.nodes.size(), -1);
        std::vector<ping::Probe> wave(std::make_move_iterator(probes.begin() + static_cast<long>(first)),
                                      std::make_move_iterator(probes.begin() + static_cast<long>(last)));
        for (std::size_t i = first; i < last; ++i) {
            const std::size_t n = sources[i];
            if (fd_of[n] < 0) {
                held.push_back(netns::open(topo.nodes[n].netns));
                fd_of[n] = held.back().fd.get();
            }
            wave[i - first].netns_fd = fd_of[n];
        }
        for (auto& r : ping::run(wave)) results.push_back(std::move(r));
        since_flush += last - first;
        first = last;
    }
    return results;
}

}  // namespace

nlohmann::json to_json(const CheckResult& r) {
    // The field names of Python's CheckResult; RTTs are null without a reply.
    auto rtt = [&](double v) { return r.received ? Json(v) : Json(nullptr); };
    Json j{{"name", r.name},
           {"points", r.points},
           {"attempts", r.attempts},
           {"kind", to_string(r.kind)},
           {"src", r.from},
           {"dst", r.to},
           {"address", r.address},
           {"expect", to_string(r.expect)},
           {"ok", r.ok},
           {"sent", r.sent},
           {"received", r.received},
           {"rtt_min_ms", rtt(r.rtt_min)},
           {"rtt_avg_ms", rtt(r.rtt_avg)},
           {"rtt_max_ms", rtt(r.rtt_max)},
           {"reason", r.reason}};
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

std::vector<CheckResult> Lab::verify(bool all_pairs) {
    if (!is_up()) throw UsageError("lab " + topo_.name + " is not up");
    raise_fd_limit();
    // A node whose namespace is gone (ip netns del) is missing: the checks that involve
    // it fail, the others run. Namespaces are opened later, a wave of sources at a time.
    std::vector<bool> missing(topo_.nodes.size(), false);
    std::vector<std::size_t> relays;  // present nodes that may forward a probe
    for (std::size_t i = 0; i < topo_.nodes.size(); ++i) {
        missing[i] = !netns::identity(topo_.nodes[i].netns);
        if (!missing[i] && forwards(topo_.nodes[i])) relays.push_back(i);
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
    std::vector<std::size_t> sources;               // of each probe, its source node
    std::vector<std::optional<std::size_t>> dests;  // and its destination's, if the lab's
    std::vector<Want> wants;
    auto add = [&](std::size_t from, std::optional<std::size_t> to, Want want, const ping::Probe& p) {
        if (missing[from]) want.failed = missing_reason(from);
        else if (to && missing[*to]) want.failed = missing_reason(*to);
        else {
            probes.push_back(p);
            sources.push_back(from);
            dests.push_back(to);
        }
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
                command_results = run_command_checks(topo_, commands);
            } catch (...) {
                command_failure = std::current_exception();
            }
        });
    std::vector<ping::ProbeResult> results;
    try {
        results = run_paced(topo_, std::move(probes), sources, dests, relays);
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

}  // namespace labctl::engine
