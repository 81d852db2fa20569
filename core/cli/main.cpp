// labctl's command line: argument parsing, output, exit codes. The only place that prints.

#include <signal.h>

#include <CLI/CLI.hpp>
#include <iostream>
#include <string>
#include <vector>

#include "base/error.hpp"
#include "cli/commands.hpp"

int main(int argc, char** argv) {
    using namespace labctl::cli;
    // A reader that goes away (| head, dot exiting early) is an EPIPE, not a crash.
    ::signal(SIGPIPE, SIG_IGN);

    CLI::App app{"labctl: virtual network labs from a JSON topology", "labctl"};
    app.set_version_flag("--version", std::string("labctl ") + LABCTL_VERSION);
    app.require_subcommand(1);
    app.fallthrough(false);

    Options o;

    auto* validate = app.add_subcommand("validate", "Check a topology file; print every problem");
    validate->add_option("FILE", o.file, "Topology file")->required();

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
    status->add_option("LAB", o.target, "Lab name");
    status->add_flag("--json", o.json, "Print JSON");

    auto* verify = app.add_subcommand("verify", "Run a lab's checks (or ping every pair)");
    verify->add_option("TARGET", o.target, "Topology file or lab name")->required();
    verify->add_flag("--all-pairs", o.all_pairs,
                    "Ping every node with an address from every other one (in a family both have)");
    verify->add_flag("--json", o.json, "Print JSON");
    verify->add_option("--name", o.name, "The instance's lab name (with a topology file)");

    auto* ping = app.add_subcommand(kPingCommand, "Ping from a node (or node:ifname) to a node or address");
    ping->add_option("LAB", o.target, "Lab name")->required();
    ping->add_option("FROM", o.from, "node or node:ifname")->required();
    ping->add_option("TO", o.to, "node, node:ifname or address")->required();
    ping->add_option("-c,--count", o.count, "Echo requests to send")->check(CLI::Range(1, 100000));
    ping->add_option("-W,--timeout", o.timeout_s, "Seconds to wait for a reply")->check(CLI::Range(0.001, 3600.0));

    auto* exec = app.add_subcommand("exec", "Run a command inside a node");
    exec->add_option("LAB", o.target, "Lab name")->required();
    exec->add_option("NODE", o.node, "Node name")->required();
    exec->add_option("COMMAND", o.command, "Command and arguments (after --)")->required();
    exec->prefix_command(false);

    auto* doctor = app.add_subcommand("doctor", "List the kernel features labs may use and whether this kernel has them");
    doctor->add_flag("--json", o.json, "Print JSON");

    auto* graph = app.add_subcommand("graph", "Draw the lab with Graphviz");
    graph->add_option("FILE", o.file, "Topology file")->required();
    graph->add_option("-o,--output", o.output, "OUT.dot, OUT.svg or OUT.png (default: DOT on stdout)");

    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
        int code = app.exit(e);
        return code == 0 ? 0 : kExitUsage;
    }
    if (down->parsed() && o.target.empty() && !o.all) {
        std::cerr << "labctl down: give a topology file or lab name, or --all\n";
        return kExitUsage;
    }

    if (validate->parsed()) return run_validate(o);
    if (graph->parsed()) return run_graph(o);
    if (up->parsed()) return run_up(o);
    if (down->parsed()) return run_down(o);
    if (status->parsed()) return run_status(o);
    if (verify->parsed()) return run_verify(o);
    if (ping->parsed()) return run_ping(o);
    if (exec->parsed()) return run_exec(o);
    if (doctor->parsed()) return run_doctor(o);
    if (apply->parsed()) return run_apply(o);
    if (link->parsed()) return run_link(o);
    if (impair->parsed()) return run_impair(o);
    if (node->parsed()) return run_node(o);
    return kExitUsage;
}
