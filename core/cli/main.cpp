// labctl's command line: argument parsing, output, exit codes. The only place that prints.
//
// Failures are reported here, in one place, for every subcommand: a subcommand throws,
// and main turns the exception into `labctl: MESSAGE` on stderr (one line per problem of
// an invalid topology), with --json also `{"error": ..., "errors": [...]}` on stdout, and
// the exit codes README.md lists (2 bad input or usage, 3 the operation failed).

#include <signal.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "base/error.hpp"
#include "base/timing.hpp"
#include "cli/capture_command.hpp"
#include "cli/shell.hpp"
#include "cli/commands.hpp"
#include "engine/lab.hpp"
#include "userns/userns.hpp"

namespace {

using namespace labctl;
using namespace labctl::cli;

// Every line of `message` printed as "labctl: LINE" (the first) and indented (the rest).
void print_error(const std::string& message) {
    std::istringstream in(message);
    bool first = true;
    for (std::string line; std::getline(in, line); first = false)
        std::cerr << (first ? "labctl: " : "  ") << line << "\n";
    if (message.empty()) std::cerr << "labctl: failed\n";
}

void print_json_error(const std::string& message, const std::vector<TopologyProblem>& problems) {
    nlohmann::json errors = nlohmann::json::array();
    for (const auto& p : problems) errors.push_back({{"pointer", p.pointer}, {"message", p.message}});
    std::cout << nlohmann::json{{"error", message}, {"errors", errors}}.dump(2) << std::endl;
}

// The exit code and messages for the exception being handled.
int report(std::exception_ptr failure, bool json) {
    std::string message;
    std::vector<TopologyProblem> problems;
    int code = kExitFailed;
    try {
        std::rethrow_exception(failure);
    } catch (const Error& e) {
        if (e.kind() == Error::Kind::topology) {
            const auto& bad = static_cast<const TopologyError&>(e);
            problems = bad.problems();
            for (const auto& p : problems)
                print_error(bad.file() + ": " + (p.pointer.empty() ? "" : p.pointer + ": ") + p.message);
            if (json) print_json_error(e.what(), problems);
            return kExitUsage;
        }
        // UsageError, and engine::RefusedError (the lab runs another topology: apply it
        // first), are bad input: exit 2. Every other error: 3.
        code = e.is_usage() ? kExitUsage : kExitFailed;
        message = e.what();
    } catch (const std::exception& e) {
        message = e.what();
    }
    print_error(message);
    if (json) print_json_error(message, problems);
    return code;
}

std::size_t edit_distance(const std::string& a, const std::string& b) {
    std::vector<std::size_t> row(b.size() + 1);
    for (std::size_t j = 0; j <= b.size(); ++j) row[j] = j;
    for (std::size_t i = 1; i <= a.size(); ++i) {
        std::size_t diag = row[0];
        row[0] = i;
        for (std::size_t j = 1; j <= b.size(); ++j) {
            std::size_t up = row[j];
            row[j] = std::min({row[j] + 1, row[j - 1] + 1, diag + (a[i - 1] == b[j - 1] ? 0 : 1)});
            // a swapped pair of letters ("vaildate") costs one, as git counts it
            if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1]) row[j] = std::min(row[j], diag);
            diag = up;
        }
    }
    return row[b.size()];
}

// "unknown subcommand vaildate; did you mean validate?"
std::string unknown_subcommand(const CLI::App& app, const std::string& word) {
    std::string best;
    std::size_t best_distance = 3;  // at most two edits away
    const std::function<bool(const CLI::App*)> every = [](const CLI::App*) { return true; };
    for (const auto* sub : app.get_subcommands(every)) {
        const std::string& name = sub->get_name();
        std::size_t d = name.starts_with(word) && word.size() >= 2 ? 1 : edit_distance(word, name);
        if (d < best_distance) best = name, best_distance = d;
    }
    return "unknown subcommand " + word + (best.empty() ? "; see labctl --help" : "; did you mean " + best + "?");
}

// A validator for a number in [lo, hi]: "-c abc" says "abc is not a number", "-c 0" says
// "count must be 1 to 65535" (the words Python's ping(count=0) uses too).
CLI::Validator number_in(const std::string& what, double lo, double hi, bool integer) {
    return CLI::Validator(
        [=](std::string& text) -> std::string {
            const char* s = text.c_str();
            char* end = nullptr;
            errno = 0;
            double v = std::strtod(s, &end);
            if (text.empty() || end == s || *end != '\0' || errno == ERANGE || v != v) return text + " is not a number";
            if (integer && v != static_cast<double>(static_cast<long long>(v))) return text + " is not a whole number";
            if (v < lo || v > hi) {
                std::ostringstream range;
                range << what << " must be " << lo << " to " << hi << ", not " << text;
                return range.str();
            }
            return {};
        },
        integer ? "INT" : "NUMBER");
}

}  // namespace

int main(int argc, char** argv) {
    // A reader that goes away (| head, dot exiting early) is an EPIPE, not a crash.
    ::signal(SIGPIPE, SIG_IGN);
    // LABCTL_TIMINGS=1: the wall time of each step of up, apply and the runtime changes on
    // stderr (bench/README.md). The library only reports them (base/timing.hpp).
    if (std::getenv("LABCTL_TIMINGS") != nullptr)
        set_timing_sink([](std::string_view step, double seconds) {
            std::fprintf(stderr, "labctl: %.*s: %.3f s\n", static_cast<int>(step.size()), step.data(), seconds);
        });

    CLI::App app{"labctl: virtual network labs from a JSON topology", "labctl"};
    app.set_version_flag("--version", std::string("labctl ") + LABCTL_VERSION);
    app.require_subcommand(1);
    app.fallthrough(false);

    Options o;

    auto* validate = app.add_subcommand("validate", "Check a topology file; print every problem");
    validate->add_option("FILE", o.file, "Topology file")->required();
    validate->add_flag("--json", o.json, "Print the result as JSON");

    auto* up = app.add_subcommand("up", "Build the lab: namespaces, links, addresses, routes; run its checks");
    up->add_option("FILE", o.file, "Topology file")->required();
    up->add_flag("--no-verify", o.no_verify, "Do not run the topology's checks");
    up->add_flag("--json", o.json, "Print the result as JSON");
    up->add_option("--name", o.name, "Run the topology under this lab name (an instance)");

    auto* apply = app.add_subcommand("apply", "Make a running lab match FILE, changing only what differs");
    apply->add_option("FILE", o.file, "Topology file")->required();
    apply->add_option("--name", o.name, "The instance's lab name");
    apply->add_flag("--dry-run", o.dry_run, "Print the plan; touch nothing");
    apply->add_flag("--no-verify", o.no_verify, "Do not run the topology's checks");
    apply->add_flag("--json", o.json, "Print the plan and the checks as JSON");

    auto* link = app.add_subcommand("link", "Pull a link's cable (down) or plug it back (up)");
    link->add_option("LAB", o.target, "Lab name")->required();
    link->add_option("END", o.end, "NODE:IFNAME, either end of the link")->required();
    link->add_option("STATE", o.action, "down or up")->required()->check(CLI::IsMember({"down", "up"}));

    auto* impair = app.add_subcommand("impair", "Set (or --clear) a link's impairment, on both ends");
    impair->add_option("LAB", o.target, "Lab name")->required();
    impair->add_option("END", o.end, "NODE:IFNAME, either end of the link")->required();
    impair->add_option("--delay", o.delay, "Delay, ms")->check(CLI::Range(0.0, 1e6));
    impair->add_option("--jitter", o.jitter, "Jitter, ms")->check(CLI::Range(0.0, 1e6));
    impair->add_option("--loss", o.loss, "Loss, percent")->check(CLI::Range(0.0, 100.0));
    impair->add_option("--rate", o.rate, "Rate, Mbit/s")->check(CLI::Range(0.001, 1e6));
    impair->add_option("--duplicate", o.duplicate, "Duplicates, percent")->check(CLI::Range(0.0, 100.0));
    impair->add_option("--reorder", o.reorder, "Reordering, percent")->check(CLI::Range(0.0, 100.0));
    impair->add_flag("--clear", o.clear, "Remove the impairment");

    auto* node = app.add_subcommand("node", "Power a node off (stop), on (start), or both (restart)");
    node->add_option("LAB", o.target, "Lab name")->required();
    node->add_option("NODE", o.node, "Node name")->required();
    node->add_option("ACTION", o.action, "stop, start or restart")
        ->required()
        ->check(CLI::IsMember({"stop", "start", "restart"}));

    auto* down = app.add_subcommand("down", "Remove a lab: every namespace, interface and process");
    down->add_option("TARGET", o.target, "Topology file or lab name");
    down->add_flag("--all", o.all, "Remove every lab labctl knows of");
    down->add_option("--name", o.name, "The instance's lab name (with a topology file)");

    auto* status = app.add_subcommand("status", "List labs, or one lab's nodes, interfaces and daemons");
    status->add_option("LAB", o.target, "Lab name (or its topology file)");
    status->add_flag("--json", o.json, "Print JSON");

    auto* verify = app.add_subcommand("verify", "Run a lab's checks (or ping every pair)");
    verify->add_option("TARGET", o.target, "Topology file or lab name")->required();
    verify->add_flag("--all-pairs", o.all_pairs,
                     "Ping every node with an address from every other one (in every family both have)");
    verify->add_flag("--json", o.json, "Print JSON");
    verify->add_option("--junit", o.junit, "Also write the results as JUnit XML to FILE");
    verify->add_option("--name", o.name, "The instance's lab name (with a topology file)");

    auto* ping = app.add_subcommand(kPingCommand, "Ping from a node (or node:ifname) to a node or address");
    ping->add_option("LAB", o.target, "Lab name")->required();
    ping->add_option("FROM", o.from, "node or node:ifname")->required();
    ping->add_option("TO", o.to, "node, node:ifname or address")->required();
    ping->add_option("-c,--count", o.count, "Echo requests to send (default 3)")
        ->check(number_in("count", 1, engine::kMaxPingCount, true));
    ping->add_option("-W,--timeout", o.timeout_s, "Seconds to wait for a reply after the last request (default 1)")
        ->check(number_in("timeout", 0.001, 3600, false));
    ping->add_option("-i,--interval", o.interval_s, "Seconds between requests (default 0.2)")
        ->check(number_in("interval", 0.001, 3600, false));
    auto* v4 = ping->add_flag("-4", o.ipv4, "Ping the target's IPv4 address");
    ping->add_flag("-6", o.ipv6, "Ping the target's IPv6 address")->excludes(v4);
    ping->add_flag("--json", o.json, "Print the result as JSON");

    auto* exec = app.add_subcommand("exec", "Run a command inside a node");
    exec->add_option("LAB", o.target, "Lab name")->required();
    exec->add_option("NODE", o.node, "Node name")->required();
    exec->add_option("COMMAND", o.command, "Command and arguments (after --)")->required();
    exec->prefix_command(false);

    auto* doctor = app.add_subcommand(
        "doctor", "Say whether labs work here: rootless mode for this user, and the kernel features labs may use");
    doctor->add_flag("--json", o.json, "Print JSON");

    auto* graph = app.add_subcommand("graph", "Draw the lab with Graphviz");
    graph->add_option("TARGET", o.file, "Topology file or the name of a running lab")->required();
    graph->add_option("-o,--output", o.output, "OUT.dot, OUT.svg or OUT.png (default: DOT on stdout)");

    auto* serve = app.add_subcommand("serve", "Serve a live web page of every running lab");
    serve->add_option("--bind", o.bind, "Address to listen on (default 127.0.0.1: this machine only)");
    serve->add_option("--port", o.port, "TCP port (default 8480; 0: any free port)")->check(CLI::Range(0, 65535));

    auto* events = app.add_subcommand("events", "Print a running lab's changes as they happen, one line each");
    events->add_option("LAB", o.target, "Lab name")->required();
    events->add_flag("--json", o.json, "One JSON object per line");

    CaptureCommand capture(app);

    // Last, so that completion and the man page see every subcommand above.
    if (auto code = add_shell_support(app, argc, argv)) return *code;

    // --json anywhere before "--" asks for the JSON error too, parse errors included.
    bool json_asked = false;
    for (int i = 1; i < argc && std::strcmp(argv[i], "--") != 0; ++i)
        json_asked = json_asked || !std::strcmp(argv[i], "--json");

    if (argc < 2) {
        std::cerr << app.help();
        return kExitUsage;
    }
    if (argv[1][0] != '-') {
        try {
            app.get_subcommand(std::string(argv[1]));
        } catch (const CLI::OptionNotFound&) {
            try {
                throw UsageError(unknown_subcommand(app, argv[1]));
            } catch (...) {
                return report(std::current_exception(), json_asked);
            }
        }
    }
    try {
        app.parse(argc, argv);
    } catch (const CLI::CallForHelp& e) {
        return app.exit(e);
    } catch (const CLI::CallForAllHelp& e) {
        return app.exit(e);
    } catch (const CLI::CallForVersion& e) {
        return app.exit(e);
    } catch (const CLI::Success& e) {  // `completion` printed its script
        return app.exit(e);
    } catch (const CLI::ParseError& e) {
        std::string sub;
        for (const auto* s : app.get_subcommands()) sub = s->get_name();
        print_error(std::string(e.what()) + "\n(see labctl " + (sub.empty() ? "" : sub + " ") + "--help)");
        if (json_asked) print_json_error(e.what(), {});
        return kExitUsage;
    }

    // Without privileges: into the user namespace of the caller's keeper, while this
    // process has one thread. validate and graph FILE touch nothing and need none; doctor
    // reports a failure to enter, everything else stops at it (exit 3).
    bool file_only = validate->parsed() || (graph->parsed() && ::access(o.target.c_str(), F_OK) == 0);
    if (!file_only) userns::enter_if_unprivileged();

    try {
        if (!file_only && !doctor->parsed() && !userns::join_error().empty())
            throw LabError(userns::join_error(), EPERM);
        if (down->parsed() && o.target.empty() && !o.all)
            throw UsageError("down: give a topology file or lab name, or --all");
        if (validate->parsed()) return run_validate(o);
        if (graph->parsed()) return run_graph(o);
        if (up->parsed()) return run_up(o);
        if (down->parsed()) return run_down(o);
        if (status->parsed()) return run_status(o);
        if (verify->parsed()) return run_verify(o);
        if (ping->parsed()) return run_ping(o);
        if (exec->parsed()) return run_exec(o);
        if (doctor->parsed()) return run_doctor(o);
        if (capture.parsed()) return capture.run();
        if (serve->parsed()) return run_serve(o);
        if (events->parsed()) return run_events(o);
        if (apply->parsed()) return run_apply(o);
        if (link->parsed()) return run_link(o);
        if (impair->parsed()) return run_impair(o);
        if (node->parsed()) return run_node(o);
    } catch (...) {
        return report(std::current_exception(), o.json || json_asked);
    }
    return kExitUsage;
}
