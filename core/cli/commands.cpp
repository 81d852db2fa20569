#include "cli/commands.hpp"

#include <signal.h>
#include <sys/stat.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <iostream>

#include "base/error.hpp"
#include "engine/lab.hpp"
#include "graph/graph.hpp"
#include "topology/load.hpp"

namespace labctl::cli {

namespace {

void print_problems(const TopologyError& e) { std::cerr << e.what() << "\n"; }

}  // namespace

int run_validate(const Options& o) {
    try {
        auto topo = topology::load_file(o.file);
        std::cout << o.file << ": valid: lab " << topo.name << ", " << topo.nodes.size() << " nodes, "
                  << topo.links.size() << " links, " << topo.checks.size() << " checks\n";
        return kExitOk;
    } catch (const TopologyError& e) {
        print_problems(e);
        return kExitUsage;
    }
}

int run_graph(const Options& o) {
    topology::Topology topo;
    try {
        topo = topology::load_file(o.file);
    } catch (const TopologyError& e) {
        print_problems(e);
        return kExitUsage;
    }
    if (o.output.empty()) {
        std::cout << graph::to_dot(topo);
        return kExitOk;
    }
    try {
        graph::render(topo, o.output);
        return kExitOk;
    } catch (const LabError& e) {
        std::cerr << "labctl graph: " << e.what() << "\n";
        return kExitUsage;
    } catch (const KernelError& e) {
        std::cerr << "labctl graph: " << e.what() << "\n";
        return kExitFailed;
    }
}

namespace {

// Runs an engine call, turning its exceptions into messages and exit codes.
template <typename F>
int guarded(const char* what, F&& f) {
    try {
        return f();
    } catch (const TopologyError& e) {
        print_problems(e);
        return kExitUsage;
    } catch (const engine::RefusedError& e) {
        std::cerr << "labctl " << what << ": " << e.what() << "\n";
        return kExitUsage;
    } catch (const KernelError& e) {
        std::cerr << "labctl " << what << ": " << e.what() << "\n";
        return kExitFailed;
    } catch (const LabError& e) {
        std::cerr << "labctl " << what << ": " << e.what() << "\n";
        return kExitFailed;
    } catch (const std::exception& e) {
        std::cerr << "labctl " << what << ": " << e.what() << "\n";
        return kExitFailed;
    }
}

std::string fmt_ms(double v) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.3f", v);
    return buf;
}

std::string pad(std::string s, std::size_t width) {
    if (s.size() < width) s.append(width - s.size(), ' ');
    return s;
}

void print_checks(const std::vector<engine::CheckResult>& checks) {
    if (checks.empty()) {
        std::cout << "no checks\n";
        return;
    }
    std::vector<std::vector<std::string>> rows;
    rows.push_back({"FROM", "TO", "ADDRESS", "EXPECT", "RESULT", "REPLIES", "RTT min/avg/max ms", "NOTE"});
    for (const auto& c : checks) {
        std::string rtt = c.received ? fmt_ms(c.rtt_min) + "/" + fmt_ms(c.rtt_avg) + "/" + fmt_ms(c.rtt_max) : "-";
        rows.push_back({c.from, c.to, c.address, topology::to_string(c.expect), c.ok ? "ok" : "FAIL",
                        std::to_string(c.received) + "/" + std::to_string(c.sent), rtt,
                        c.received ? "" : c.reason});
    }
    std::vector<std::size_t> width(rows[0].size(), 0);
    for (const auto& r : rows)
        for (std::size_t i = 0; i < r.size(); ++i) width[i] = std::max(width[i], r[i].size());
    for (const auto& r : rows) {
        std::string line;
        for (std::size_t i = 0; i < r.size(); ++i) line += (i ? "  " : "") + (i + 1 < r.size() ? pad(r[i], width[i]) : r[i]);
        while (!line.empty() && line.back() == ' ') line.pop_back();
        std::cout << line << "\n";
    }
    auto failed = std::count_if(checks.begin(), checks.end(), [](const auto& c) { return !c.ok; });
    std::cout << checks.size() - static_cast<std::size_t>(failed) << " passed, " << failed << " failed\n";
}

nlohmann::json checks_json(const std::vector<engine::CheckResult>& checks) {
    nlohmann::json a = nlohmann::json::array();
    for (const auto& c : checks) a.push_back(engine::to_json(c));
    return a;
}

bool all_ok(const std::vector<engine::CheckResult>& checks) {
    return std::all_of(checks.begin(), checks.end(), [](const auto& c) { return c.ok; });
}

// A lab named by FILE or LAB: the file's topology when it is a file (under `name` when
// given; refused unless the running lab was built from it), else the running lab's.
engine::Lab lab_for(const std::string& target, const std::string& name) {
    struct stat st {};
    if (::stat(target.c_str(), &st) == 0 && S_ISREG(st.st_mode)) {
        auto lab = engine::Lab::from_file(target, name);
        lab.require_same_topology();
        return lab;
    }
    return engine::Lab::attach(name.empty() ? engine::lab_name_of(target) : name);
}

nlohmann::json changes_json(const std::vector<plan::Change>& changes) {
    nlohmann::json a = nlohmann::json::array();
    for (const auto& c : changes)
        a.push_back({{"op", std::string(1, c.op)}, {"kind", c.kind}, {"target", c.target}, {"detail", c.detail},
                     {"line", c.line()}});
    return a;
}

void print_changes(const std::vector<plan::Change>& changes) {
    if (changes.empty()) std::cout << "no changes\n";
    for (const auto& c : changes) std::cout << c.line() << "\n";
    std::cout.flush();
}

}  // namespace

// SIGINT/SIGTERM/SIGHUP during `up`: finish the current step, then remove what was
// built (a second signal changes nothing: the removal is not interrupted).
extern "C" void on_interrupt(int) { engine::interrupt_flag().store(true); }

int run_up(const Options& o) {
    struct sigaction sa {};
    sa.sa_handler = on_interrupt;
    sigemptyset(&sa.sa_mask);
    for (int sig : {SIGINT, SIGTERM, SIGHUP}) ::sigaction(sig, &sa, nullptr);
    return guarded("up", [&] {
        auto lab = engine::Lab::from_file(o.file, o.name);
        if (!o.no_verify)
            for (const auto& w : lab.host_limit_warnings(false)) std::cerr << "labctl up: warning: " << w << "\n";
        auto result = lab.up(!o.no_verify);
        for (const auto& note : result.notes) std::cerr << "labctl up: " << note << "\n";
        bool ok = result.checks_ok();
        if (o.json) {
            nlohmann::json j{{"lab", lab.name()}, {"up", true}, {"notes", result.notes},
                             {"checks", checks_json(result.checks)}, {"ok", ok}};
            std::cout << j.dump(2) << "\n";
        } else {
            std::cout << "lab " << lab.name() << " is up: " << lab.topology().nodes.size() << " nodes, "
                      << lab.topology().links.size() << " links\n";
            if (!o.no_verify) print_checks(result.checks);
        }
        return ok ? kExitOk : kExitCheckFailed;
    });
}

int run_down(const Options& o) {
    return guarded("down", [&] {
        if (o.all) {
            auto removed = engine::down_all();
            std::cout << (removed.empty() ? "no labs to remove" : "removed " + std::to_string(removed.size()) + " lab(s)")
                      << "\n";
            return kExitOk;
        }
        std::string name = o.name.empty() ? engine::lab_name_of(o.target) : o.name;
        bool removed = engine::down(name);
        std::cout << "lab " << name << (removed ? " removed" : " is not up") << "\n";
        return kExitOk;
    });
}

int run_status(const Options& o) {
    return guarded("status", [&] {
        if (o.target.empty()) {
            auto labs = engine::status_all();
            if (o.json) {
                std::cout << labs.dump(2) << "\n";
            } else if (labs.empty()) {
                std::cout << "no labs\n";
            } else {
                for (const auto& l : labs)
                    std::cout << pad(l["name"].get<std::string>(), 18) << pad(l["state"].get<std::string>(), 12)
                              << l["nodes"].get<std::size_t>() << " nodes  " << l["source"].get<std::string>() << "\n";
            }
            return kExitOk;
        }
        auto lab = engine::Lab::attach(engine::lab_name_of(o.target));
        auto s = lab.status();
        if (o.json) {
            std::cout << s.dump(2) << "\n";
            return kExitOk;
        }
        std::cout << "lab " << s["name"].get<std::string>() << ": " << s["state"].get<std::string>() << "\n";
        if (s.contains("runtime")) {
            const auto& rt = s["runtime"];
            for (const auto& e : rt["links_down"]) std::cout << "  runtime: link " << e.get<std::string>() << " down\n";
            for (const auto& [key, v] : rt["impaired"].items()) {
                std::string what;
                for (const auto& [f, x] : v.items()) what += " " + f + " " + x.dump();
                std::cout << "  runtime: link " << key << (what.empty() ? " impairment cleared" : " impaired:" + what)
                          << "\n";
            }
            for (const auto& n : rt["nodes_stopped"]) std::cout << "  runtime: node " << n.get<std::string>() << " stopped\n";
        }
        for (const auto& n : s["nodes"]) {
            std::cout << "  " << n["name"].get<std::string>() << " (" << n["kind"].get<std::string>()
                      << ", namespace " << n["namespace"].get<std::string>()
                      << (n.value("stopped", false) ? ", stopped" : "") << ")\n";
            for (const auto& i : n["interfaces"]) {
                std::string addrs;
                for (const auto& a : i["addresses"]) addrs += " " + a.get<std::string>();
                std::string master = i.contains("master") ? " master " + i["master"].get<std::string>() : "";
                std::cout << "    " << pad(i["name"].get<std::string>(), 16) << pad(i["kind"].get<std::string>(), 10)
                          << pad(i["state"].get<std::string>(), 8) << "mtu " << i["mtu"].get<std::uint32_t>() << master
                          << addrs << "\n";
            }
            for (const auto& d : n["daemons"]) {
                std::string argv;
                for (const auto& a : d["argv"]) argv += (argv.empty() ? "" : " ") + a.get<std::string>();
                std::cout << "    daemon pid " << d["pid"].get<int>() << (d["running"].get<bool>() ? " running: " : " exited: ")
                          << argv << "\n";
            }
        }
        return kExitOk;
    });
}

int run_verify(const Options& o) {
    return guarded("verify", [&] {
        auto lab = lab_for(o.target, o.name);
        for (const auto& w : lab.host_limit_warnings(o.all_pairs)) std::cerr << "labctl verify: warning: " << w << "\n";
        auto checks = lab.verify(o.all_pairs);
        if (o.json)
            std::cout << nlohmann::json{{"lab", lab.name()}, {"checks", checks_json(checks)}, {"ok", all_ok(checks)}}.dump(2)
                      << "\n";
        else
            print_checks(checks);
        return all_ok(checks) ? kExitOk : kExitCheckFailed;
    });
}

int run_ping(const Options& o) {
    return guarded(kPingCommand, [&] {
        auto lab = engine::Lab::attach(engine::lab_name_of(o.target));
        int count = o.count > 0 ? o.count : 3;
        auto timeout = std::chrono::milliseconds(static_cast<long>((o.timeout_s > 0 ? o.timeout_s : 1.0) * 1000));
        std::string address;
        bool header = false;
        auto out = lab.ping(o.from, o.to, count, timeout, std::chrono::milliseconds(200), [&](const ping::Reply& r) {
            (void)header;
            std::cout << "reply from " << o.to << ": icmp_seq=" << r.seq << " ttl=" << r.ttl
                      << " time=" << fmt_ms(r.rtt_ms) << " ms" << std::endl;
        });
        const auto& res = out.result;
        int loss = res.sent ? (100 * (res.sent - res.received) + res.sent / 2) / res.sent : 100;
        std::cout << "--- " << o.to << " (" << out.address << ") from " << o.from << " ---\n"
                  << res.sent << " packets transmitted, " << res.received << " received, " << loss << "% packet loss\n";
        if (res.received)
            std::cout << "rtt min/avg/max = " << fmt_ms(res.rtt_min()) << "/" << fmt_ms(res.rtt_avg()) << "/"
                      << fmt_ms(res.rtt_max()) << " ms\n";
        else if (!res.reason.empty())
            std::cout << res.reason << "\n";
        return res.received > 0 ? kExitOk : kExitCheckFailed;
    });
}

int run_apply(const Options& o) {
    struct sigaction sa {};
    sa.sa_handler = on_interrupt;
    sigemptyset(&sa.sa_mask);
    for (int sig : {SIGINT, SIGTERM, SIGHUP}) ::sigaction(sig, &sa, nullptr);
    return guarded("apply", [&] {
        auto lab = engine::Lab::from_file(o.file, o.name);
        auto result = lab.apply(o.dry_run, !o.no_verify, [&](const std::vector<plan::Change>& changes) {
            if (!o.json) print_changes(changes);
        });
        for (const auto& note : result.notes) std::cerr << "labctl apply: " << note << "\n";
        bool ok = result.checks_ok();
        if (o.json) {
            nlohmann::json j{{"lab", lab.name()},           {"dry_run", o.dry_run}, {"changes", changes_json(result.changes)},
                             {"checks", checks_json(result.checks)}, {"ok", ok}};
            std::cout << j.dump(2) << "\n";
        } else if (!o.dry_run && !o.no_verify && (result.brought_up || !result.changes.empty() || !result.checks.empty())) {
            print_checks(result.checks);
        }
        return ok ? kExitOk : kExitCheckFailed;
    });
}

int run_link(const Options& o) {
    return guarded("link", [&] {
        auto lab = engine::Lab::attach(engine::lab_name_of(o.target));
        print_changes(lab.link_state(o.end, o.action == "up"));
        return kExitOk;
    });
}

int run_impair(const Options& o) {
    bool any = o.delay || o.jitter || o.loss || o.rate || o.duplicate || o.reorder;
    if (any == o.clear) {
        std::cerr << "labctl impair: give --delay/--jitter/--loss/--rate/--duplicate/--reorder, or --clear\n";
        return kExitUsage;
    }
    if (o.jitter && !o.delay) {
        std::cerr << "labctl impair: --jitter needs a --delay to vary around\n";
        return kExitUsage;
    }
    if (o.reorder && !o.delay) {
        std::cerr << "labctl impair: --reorder needs a --delay (reordered packets skip it)\n";
        return kExitUsage;
    }
    return guarded("impair", [&] {
        auto lab = engine::Lab::attach(engine::lab_name_of(o.target));
        std::optional<topology::Impairment> im;
        if (!o.clear) im = topology::Impairment{o.delay, o.jitter, o.loss, o.rate, o.duplicate, o.reorder};
        print_changes(lab.impair(o.end, im));
        return kExitOk;
    });
}

int run_node(const Options& o) {
    return guarded("node", [&] {
        auto lab = engine::Lab::attach(engine::lab_name_of(o.target));
        auto action = o.action == "stop" ? engine::NodeAction::stop
                      : o.action == "start" ? engine::NodeAction::start
                                            : engine::NodeAction::restart;
        print_changes(lab.node_power(o.node, action));
        return kExitOk;
    });
}

int run_doctor(const Options& o) {
    return guarded("doctor", [&] {
        auto features = engine::kernel_features();
        if (o.json) {
            nlohmann::json a = nlohmann::json::array();
            for (const auto& f : features)
                a.push_back({{"feature", f.name}, {"config", f.config}, {"used_for", f.used_for}, {"present", f.present}});
            std::cout << a.dump(2) << "\n";
        } else {
            for (const auto& f : features)
                std::cout << (f.present ? "yes  " : "NO   ") << pad(f.name, 24) << pad(f.config, 30) << f.used_for << "\n";
        }
        bool all = std::all_of(features.begin(), features.end(), [](const auto& f) { return f.present; });
        return all ? kExitOk : kExitCheckFailed;
    });
}

int run_exec(const Options& o) {
    try {
        auto lab = engine::Lab::attach(engine::lab_name_of(o.target));
        return lab.exec_interactive(o.node, o.command);
    } catch (const TopologyError& e) {
        print_problems(e);
        return kExitUsage;
    } catch (const std::exception& e) {
        std::cerr << "labctl exec: " << e.what() << "\n";
        return kExitFailed;
    }
}

}  // namespace labctl::cli
