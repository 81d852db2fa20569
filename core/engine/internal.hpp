#pragma once
// What the engine's files share (not part of its API: the CLI and Python never see it).

#include <atomic>
#include <chrono>
#include <string>
#include <vector>

#include "base/timing.hpp"
#include "engine/ready.hpp"
#include "engine/teardown.hpp"
#include "plan/plan.hpp"
#include "realize/realize.hpp"
#include "state/state.hpp"
#include "topology/model.hpp"

namespace labctl::engine::detail {

// The wall time of observing and planning, reported like realize's stages (base/timing.hpp).
using Timing = ScopedTiming;

inline constexpr auto kExecTimeout = std::chrono::seconds(30);
// Of an exec command's stdout and of its stderr, the last bytes kept (memory and log).
inline constexpr std::size_t kExecOutputKept = 1u << 20;
inline constexpr auto kStopGrace = std::chrono::milliseconds(2000);
// linkwatch (which sets operstate and activates the qdisc) needs the RTNL lock; a host
// busy destroying many namespaces (cleanup_net) can hold it for seconds.
inline constexpr auto kLinkTimeout = std::chrono::seconds(30);

bool valid_lab_name(const std::string& s);
std::string join(const std::vector<std::string>& parts, const std::string& sep);
// Whether `name` is a namespace name `lab` can own: `<lab>-<node>`, one path component.
bool lab_namespace_name(const std::string& lab, const std::string& name);
// The last `max_lines` lines of `text`.
std::string tail(const std::string& text, std::size_t max_lines);
void raise_fd_limit();
// Refuses (LabError, EMFILE), before anything is touched, an fd limit below what
// building holds at once (a bounded number of nodes' namespaces and sockets; limits.cpp).
void require_fd_budget(const topology::Topology& topo);
// Free entries of the host-wide neighbour table of `proto` ("arp_cache", "ndisc_cache"),
// -1 when unknown (limits.cpp).
long neighbour_room(const std::string& proto, const std::string& family);

// The topology under another lab name: `<name>-<node>` namespaces.
void rename(topology::Topology& topo, const std::string& name);
// Exec commands, daemons, stopping processes and removing namespaces for realize::execute.
// Exec commands and daemons run as node commands (node_command.hpp) in `folder`; the
// daemons started are added to `started` (when given) to be waited for.
realize::Hooks make_hooks(const topology::Topology& topo, state::Journal& journal, const std::string& folder,
                          std::vector<StartedDaemon>* started = nullptr);
// What a runtime change reads of a node: the interfaces named (its link ends), or the
// whole node when none are.
struct Touch {
    std::string node;
    std::vector<std::string> interfaces;
};
// The running lab as the plan sees it: the topology it was built from, its namespaces
// (those `touch` names, or all when `dump_all`, read from the kernel) and its runtime
// changes. Throws KernelError, LabError.
plan::Observed observe(const std::string& lab, const state::LabRecord& rec, const topology::Topology& built,
                       const std::vector<Touch>& touch, bool dump_all);
// Waits until the daemons in `started` are ready (wait_until_ready), opening only their
// nodes' namespaces. Throws LabError naming a daemon that died or never got ready.
void wait_for_started(const topology::Topology& topo, const std::vector<StartedDaemon>& started);
plan::Runtime runtime_from_json(const topology::Topology& topo, const std::string& json);
std::string runtime_to_json(const plan::Runtime& runtime);

}  // namespace labctl::engine::detail
