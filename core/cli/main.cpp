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

    auto* down = app.add_subcommand("down", "Remove a lab: every namespace, interface and process");
    down->add_option("TARGET", o.target, "Topology file or lab name");
    down->add_flag("--all", o.all, "Remove every lab labctl knows of");

    auto* status = app.add_subcommand("status", "List labs, or one lab's nodes, interfaces and daemons");
    status->add_option("LAB", o.target, "Lab name");
    status->add_flag("--json", o.json, "Print JSON");

    auto* verify = app.add_subcommand("verify", "Run a lab's checks (or ping every pair)");
    verify->add_option("TARGET", o.target, "Topology file or lab name")->required();
    verify->add_flag("--all-pairs", o.all_pairs,
                    "Ping every node with an address from every other one (in a family both have)");
    verify->add_flag("--json", o.json, "Print JSON");

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

    auto* serve = app.add_subcommand("serve", "Serve a live web page of every running lab");
    serve->add_option("--bind", o.bind, "Address to listen on (default 127.0.0.1: this machine only)");
    serve->add_option("--port", o.port, "TCP port (default 8480; 0: any free port)")->check(CLI::Range(0, 65535));

    auto* events = app.add_subcommand("events", "Print a running lab's changes as they happen, one line each");
    events->add_option("LAB", o.target, "Lab name")->required();
    events->add_flag("--json", o.json, "One JSON object per line");

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
    if (serve->parsed()) return run_serve(o);
    if (events->parsed()) return run_events(o);
    return kExitUsage;
}
