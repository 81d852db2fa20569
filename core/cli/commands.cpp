#include "cli/commands.hpp"

#include <iostream>

#include "base/error.hpp"
#include "graph/graph.hpp"
#include "topology/load.hpp"

namespace labctl::cli {

namespace {

void print_problems(const TopologyError& e) { std::cerr << e.what() << "\n"; }

int not_built(const char* what) {
    std::cerr << "labctl " << what << ": not built yet in this version\n";
    return kExitFailed;
}

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

int run_up(const Options&) { return not_built("up"); }
int run_down(const Options&) { return not_built("down"); }
int run_status(const Options&) { return not_built("status"); }
int run_verify(const Options&) { return not_built("verify"); }
int run_ping(const Options&) { return not_built("ping"); }
int run_exec(const Options&) { return not_built("exec"); }

}  // namespace labctl::cli
