#include "cli/commands.hpp"

#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <iostream>

#include "base/error.hpp"
#include "base/ip.hpp"
#include "cli/report.hpp"
#include "engine/lab.hpp"
#include "events/events.hpp"
#include "graph/graph.hpp"
#include "serve/serve.hpp"
#include "topology/load.hpp"
#include "userns/userns.hpp"

namespace labctl::cli {

using namespace detail;

namespace {

// "1 link", "2 links".
std::string count_of(std::size_t n, const std::string& word) {
    return std::to_string(n) + " " + word + (n == 1 ? "" : "s");
}

// A lab named by FILE or LAB: the file's topology when it is a file, else the running lab's.
engine::Lab lab_for(const std::string& target) {
    struct stat st {};
    if (::stat(target.c_str(), &st) == 0 && S_ISREG(st.st_mode)) return engine::Lab::from_file(target);
    return engine::Lab::attach(engine::lab_name_of(target));
}

}  // namespace

int run_validate(const Options& o) {
    auto topo = topology::load_file(o.file);
    if (o.json) {
        std::cout << nlohmann::json{{"file", o.file},
                                    {"valid", true},
                                    {"lab", topo.name},
                                    {"nodes", topo.nodes.size()},
                                    {"links", topo.links.size()},
                                    {"checks", topo.checks.size()}}
                         .dump(2)
                  << "\n";
        return kExitOk;
    }
    std::cout << o.file << ": valid: lab " << topo.name << ", " << count_of(topo.nodes.size(), "node") << ", "
              << count_of(topo.links.size(), "link") << ", " << count_of(topo.checks.size(), "check") << "\n";
    return kExitOk;
}

int run_graph(const Options& o) {
    // FILE, or the name of a running lab (drawn from the topology it was built from).
    auto lab = lab_for(o.file);
    if (o.output.empty()) {
        std::cout << graph::to_dot(lab.topology());
        return kExitOk;
    }
    graph::render(lab.topology(), o.output);
    return kExitOk;
}

namespace {

// Runs a subcommand's body. Failures propagate to main, which reports them for every
// subcommand alike (messages, --json errors, exit codes).
template <typename F>
int guarded(const char*, F&& f) {
    return f();
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
            for (const auto& w : lab.host_limit_warnings(false)) std::cerr << "labctl: warning: " << w << "\n";
        auto result = lab.up(!o.no_verify);
        for (const auto& note : result.notes) std::cerr << "labctl: " << note << "\n";
        bool ok = result.checks_ok();
        if (o.json) {
            nlohmann::json j = checks_report(lab.name(), result.checks);
            j["up"] = true;
            j["notes"] = result.notes;
            std::cout << j.dump(2) << "\n";
        } else {
            std::cout << "lab " << lab.name() << " is up: " << count_of(lab.topology().nodes.size(), "node") << ", "
                      << count_of(lab.topology().links.size(), "link") << "\n";
            if (!o.no_verify) print_checks(result.checks);
        }
        return ok ? kExitOk : kExitCheckFailed;
    });
}

int run_down(const Options& o) {
    return guarded("down", [&] {
        if (o.all) {
            auto removed = engine::down_all();
            std::cout << (removed.empty() ? "no labs to remove"
                                          : "removed " + std::to_string(removed.size()) + " lab(s)")
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
        // The state directory and the namespaces are root's: say so as `up` does.
        engine::require_privileges();
        if (o.target.empty()) {
            auto labs = engine::status_all();
            if (o.json) {
                std::cout << labs.dump(2) << "\n";
            } else if (labs.empty()) {
                std::cout << "no labs\n";
            } else {
                std::cout << pad("LAB", 18) << pad("STATE", 12) << pad("NODES", 7) << pad("DAEMONS", 9) << "SOURCE\n";
                for (const auto& l : labs)
                    std::cout << pad(l["name"].get<std::string>(), 18) << pad(l["state"].get<std::string>(), 12)
                              << pad(std::to_string(l["nodes"].get<std::size_t>()), 7)
                              << pad(std::to_string(l["daemons"].get<std::size_t>()), 9)
                              << l["source"].get<std::string>() << "\n";
            }
            return kExitOk;
        }
        auto lab = engine::Lab::attach(engine::lab_name_of(o.target));
        auto s = lab.status();
        if (o.json) {
            std::cout << s.dump(2) << "\n";
            return kExitOk;
        }
        std::cout << "lab " << s["name"].get<std::string>() << ": " << s["state"].get<std::string>();
        if (!s["description"].get<std::string>().empty())
            std::cout << " (" << s["description"].get<std::string>() << ")";
        std::cout << "\n";
        if (s.contains("source")) std::cout << "  from " << s["source"].get<std::string>() << "\n";
        if (s.contains("state_dir")) std::cout << "  state and logs in " << s["state_dir"].get<std::string>() << "\n";
        if (s.contains("keeper_lost")) std::cout << "  lost: " << s["keeper_lost"].get<std::string>() << "\n";
        if (s.contains("runtime")) {
            const auto& rt = s["runtime"];
            for (const auto& e : rt["links_down"]) std::cout << "  runtime: link " << e.get<std::string>() << " down\n";
            for (const auto& [key, v] : rt["impaired"].items()) {
                std::string what;
                for (const auto& [f, x] : v.items()) what += " " + f + " " + x.dump();
                std::cout << "  runtime: link " << key << (what.empty() ? " impairment cleared" : " impaired:" + what)
                          << "\n";
            }
            for (const auto& n : rt["nodes_stopped"])
                std::cout << "  runtime: node " << n.get<std::string>() << " stopped\n";
        }
        for (const auto& n : s["nodes"]) {
            std::string state = n.value("state", "up");
            std::cout << "  " << n["name"].get<std::string>() << " (" << n["kind"].get<std::string>() << ", namespace "
                      << n["namespace"].get<std::string>() << (n.value("stopped", false) ? ", stopped" : "") << ")"
                      << (state == "up" ? "" : " " + state) << "\n";
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
                std::string state = "running";
                if (!d.value("running", true)) {
                    state = "exited";
                    if (d.contains("exit_status") && !d["exit_status"].is_null())
                        state += " with status " + std::to_string(d["exit_status"].get<int>());
                    else if (d.contains("signal") && !d["signal"].is_null())
                        state += ", killed by signal " + std::to_string(d["signal"].get<int>());
                }
                std::cout << "    daemon pid " << d["pid"].get<int>() << " " << state << ": " << argv << "\n"
                          << "      log " << d["log"].get<std::string>() << "\n";
            }
        }
        for (const auto& l : s["links"]) {
            std::cout << "  link " << l["endpoints"][0].get<std::string>() << " <-> "
                      << l["endpoints"][1].get<std::string>();
            if (!l["mtu"].is_null()) std::cout << "  mtu " << l["mtu"].get<std::uint32_t>();
            for (const auto& [k, v] : l["impair"].items()) std::cout << "  " << k << " " << v.dump();
            std::cout << "\n";
        }
        return kExitOk;
    });
}

int run_verify(const Options& o) {
    return guarded("verify", [&] {
        auto lab = lab_for(o.target, o.name);
        for (const auto& w : lab.host_limit_warnings(o.all_pairs)) std::cerr << "labctl: warning: " << w << "\n";
        const auto started = std::chrono::system_clock::now();
        const auto clock = std::chrono::steady_clock::now();
        auto checks = lab.verify(o.all_pairs);
        if (!o.junit.empty()) write_junit(o.junit, lab.name(), checks, started, clock);
        if (o.json) std::cout << checks_report(lab.name(), checks).dump(2) << "\n";
        else print_checks(checks);
        return all_ok(checks) ? kExitOk : kExitCheckFailed;
    });
}

int run_ping(const Options& o) {
    // Ctrl-C (or TERM) ends the pinging; the summary of what was sent is printed, as ping(8) does.
    struct sigaction sa {};
    sa.sa_handler = on_interrupt;
    sigemptyset(&sa.sa_mask);
    for (int sig : {SIGINT, SIGTERM}) ::sigaction(sig, &sa, nullptr);
    return guarded(kPingCommand, [&] {
        auto lab = engine::Lab::attach(engine::lab_name_of(o.target));
        int count = o.count > 0 ? o.count : 3;
        auto ms = [](double s) { return std::chrono::milliseconds(static_cast<long>(s * 1000 + 0.5)); };
        auto timeout = ms(o.timeout_s > 0 ? o.timeout_s : 1.0);
        auto interval = ms(o.interval_s > 0 ? o.interval_s : 0.2);
        int family = o.ipv4 ? 4 : o.ipv6 ? 6 : 0;
        auto out = lab.ping(
            o.from, o.to, count, timeout, interval,
            [&](const ping::Reply& r) {
                if (!o.json)
                    std::cout << "reply from " << o.to << ": icmp_seq=" << r.seq << " ttl=" << r.ttl
                              << " time=" << fmt_ms(r.rtt_ms) << " ms" << std::endl;
            },
            family);
        const auto& res = out.result;
        int loss = res.sent ? (100 * (res.sent - res.received) + res.sent / 2) / res.sent : 100;
        if (o.json) {
            // The field names of Python's PingResult.
            nlohmann::json rtts = nlohmann::json::array();
            for (const auto& r : res.replies) rtts.push_back(r.rtt_ms);
            auto rtt = [&](double v) { return res.received ? nlohmann::json(v) : nlohmann::json(nullptr); };
            std::cout << nlohmann::json{{"lab", lab.name()},
                                        {"src", o.from},
                                        {"dst", o.to},
                                        {"address", out.address},
                                        {"ok", res.received > 0},
                                        {"sent", res.sent},
                                        {"received", res.received},
                                        {"loss_pct", loss},
                                        {"rtt_ms", rtts},
                                        {"rtt_min_ms", rtt(res.rtt_min())},
                                        {"rtt_avg_ms", rtt(res.rtt_avg())},
                                        {"rtt_max_ms", rtt(res.rtt_max())},
                                        {"reason", res.reason}}
                             .dump(2)
                      << "\n";
            return res.received > 0 ? kExitOk : kExitCheckFailed;
        }
        std::cout << "--- " << o.to << " (" << out.address << ") from " << o.from << " ---\n"
                  << res.sent << " packets transmitted, " << res.received << " received, " << loss << "% packet loss\n";
        if (res.received)
            std::cout << "rtt min/avg/max = " << fmt_ms(res.rtt_min()) << "/" << fmt_ms(res.rtt_avg()) << "/"
                      << fmt_ms(res.rtt_max()) << " ms\n";
        else if (!res.reason.empty()) std::cout << res.reason << "\n";
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
            nlohmann::json j = checks_report(lab.name(), result.checks);
            j["dry_run"] = o.dry_run;
            j["changes"] = changes_json(result.changes);
            j["ok"] = ok;
            std::cout << j.dump(2) << "\n";
        } else if (!o.dry_run && !o.no_verify &&
                   (result.brought_up || !result.changes.empty() || !result.checks.empty())) {
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
            : o.action == "start"        ? engine::NodeAction::start
                                         : engine::NodeAction::restart;
        print_changes(lab.node_power(o.node, action));
        return kExitOk;
    });
}

// `doctor`'s lines about rootless labs, in the shape of the kernel features: whether they
// work for the caller (root: whether they work for other users), and whether TAP/TUN does.
static std::vector<engine::KernelFeature> rootless_features() {
    std::vector<engine::KernelFeature> out;
    if (::geteuid() == 0 && !userns::active()) {
        auto setting = userns::disabling_setting();
        out.push_back(
            {"rootless labs", setting ? setting->substr(0, setting->find(' ')) : "user namespaces",
             setting ? "other users cannot run labs: " + *setting : "other users can run labs (this one is root)",
             !setting});
        return out;
    }
    const std::string& error = userns::join_error();
    std::string setting = "user namespaces";
    if (auto s = userns::disabling_setting(); s && !error.empty()) setting = s->substr(0, s->find(' '));
    out.push_back({"rootless labs", setting,
                   error.empty() ? "work for this user: keeper pid " + std::to_string(userns::keeper_pid()) +
                           ", state in " + engine::state_directory()
                                 : "do not work for this user: " + error,
                   error.empty()});
    if (error.empty()) {
        std::string tun = userns::tun_denied();
        out.push_back(
            {"tap/tun for this user", "/dev/net/tun", tun.empty() ? "tap and tun interfaces" : tun, tun.empty()});
    }
    return out;
}

int run_doctor(const Options& o) {
    return guarded("doctor", [&] {
        // Rootless labs first: without privileges the feature probe needs them to work.
        std::vector<engine::KernelFeature> features = rootless_features();
        if (userns::join_error().empty()) {
            auto kernel = engine::kernel_features();
            features.insert(features.end(), kernel.begin(), kernel.end());
        }
        // Rootless without access to /dev/net/tun: the TUN probe says nothing of the kernel.
        if (userns::active() && !userns::tun_denied().empty())
            for (auto& f : features)
                if (f.config == "CONFIG_TUN")
                    f.used_for = "tap and tun interfaces (not known: /dev/net/tun is not usable by this user)";
        if (o.json) {
            nlohmann::json a = nlohmann::json::array();
            for (const auto& f : features)
                a.push_back(
                    {{"feature", f.name}, {"config", f.config}, {"used_for", f.used_for}, {"present", f.present}});
            std::cout << a.dump(2) << "\n";
        } else {
            for (const auto& f : features)
                std::cout << (f.present ? "yes  " : "NO   ") << pad(f.name, 24) << pad(f.config, 30) << f.used_for
                          << "\n";
        }
        bool all = std::all_of(features.begin(), features.end(), [](const auto& f) { return f.present; });
        return all ? kExitOk : kExitCheckFailed;
    });
}

int run_exec(const Options& o) {
    auto lab = engine::Lab::attach(engine::lab_name_of(o.target));
    try {
        return lab.exec_interactive(o.node, o.command);
    } catch (const KernelError& e) {
        // The program could not be started: exit as a shell does, 127 when it does not
        // exist, 126 when it cannot be executed.
        if (o.command.empty() || !e.context().ends_with(": running \"" + o.command.front() + "\"")) throw;
        std::cerr << "labctl: " << e.what() << "\n";
        return e.errno_value() == ENOENT ? 127 : 126;
    }
}

int run_serve(const Options& o) {
    if (!IpAddress::parse(o.bind)) {
        std::cerr << "labctl serve: --bind: \"" << o.bind << "\" is not an IPv4 or IPv6 address\n";
        return kExitUsage;
    }
    return guarded("serve", [&] {
        serve::Options so{o.bind, static_cast<std::uint16_t>(o.port)};
        serve::run(so, [](const std::string& url) { std::cout << "labctl serve: " << url << std::endl; });
        return kExitOk;
    });
}

int run_events(const Options& o) {
    return guarded("events", [&] {
        events::follow(engine::lab_name_of(o.target), [&](const events::Event& e) {
            std::cout << (o.json ? events::to_json(e).dump() : events::to_text(e)) << std::endl;
            return static_cast<bool>(std::cout);
        });
        return kExitOk;
    });
}

}  // namespace labctl::cli
