#pragma once
// One function per subcommand; each returns the process exit code, or throws: main reports
// every failure in one place (a labctl::Error that is_usage(), e.g. TopologyError or
// UsageError, exits 2; anything else 3).

#include <optional>
#include <string>
#include <vector>

namespace labctl::cli {

// The name of the `ping` subcommand (labctl runs no ping program: core/ping is its own).
inline constexpr const char* kPingCommand = "ping";

inline constexpr int kExitOk = 0;
inline constexpr int kExitCheckFailed = 1;
inline constexpr int kExitUsage = 2;
inline constexpr int kExitFailed = 3;

struct Options {
    std::string file;
    std::string target;  // FILE or LAB
    std::string from, to, node, output;
    std::string junit;   // verify --junit FILE
    std::string name;    // --name: the instance's lab name
    std::string end;     // link/impair: NODE:IFNAME
    std::string action;  // link: up|down; node: stop|start|restart
    std::vector<std::string> command;
    bool no_verify = false, json = false, all = false, all_pairs = false, dry_run = false, clear = false;
    std::optional<double> delay, jitter, loss, rate, duplicate, reorder;
    int count = 0;                    // 0: the command's default
    double timeout_s = 0;             // 0: the command's default
    double interval_s = 0;            // 0: the command's default
    bool ipv4 = false, ipv6 = false;  // ping -4 / -6
    std::string bind = "127.0.0.1";   // serve
    int port = 8480;                  // serve
};

int run_validate(const Options& o);
int run_graph(const Options& o);
int run_up(const Options& o);
int run_down(const Options& o);
int run_status(const Options& o);
int run_verify(const Options& o);
int run_ping(const Options& o);
int run_exec(const Options& o);
int run_doctor(const Options& o);
int run_serve(const Options& o);
int run_events(const Options& o);
int run_apply(const Options& o);
int run_link(const Options& o);
int run_impair(const Options& o);
int run_node(const Options& o);

}  // namespace labctl::cli
