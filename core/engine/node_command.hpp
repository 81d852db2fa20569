#pragma once
// Internal to engine/: how a node's own commands (`exec`, `daemons`) run. The topology's
// author chooses them, so they get nothing of the caller's: a clean environment
// (standard PATH, HOME, LANG, then the node's `env`), the node's `user` when given
// (without root's privileges), and the topology file's folder as working directory, so
// that relative paths in them mean what they say. `labctl exec` is the caller's own
// command and keeps the caller's environment (Lab::exec), like `ip netns exec`.

#include <string>
#include <vector>

#include "proc/proc.hpp"
#include "topology/model.hpp"

namespace labctl::engine::detail {

// The command `argv` of `node`, entering the namespace of `netns_fd` (borrowed).
// `folder` is the topology file's folder ("" when it came from text: ours). Throws
// LabError when the node's user is unknown.
proc::Command node_command(const topology::Node& node, const std::vector<std::string>& argv, int netns_fd,
                           const std::string& folder);

}  // namespace labctl::engine::detail
