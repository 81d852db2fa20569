#pragma once
// Internal to engine/: `up` waiting for its daemons to be ready (docs/topology.md, "Daemons").

#include <string>
#include <vector>

#include "proc/proc.hpp"
#include "topology/model.hpp"

namespace labctl::engine::detail {

struct StartedDaemon {
    std::size_t node = 0;   // index in Topology::nodes
    std::size_t index = 0;  // index in Node::daemons
    proc::ProcessId id;
    std::string log;
    std::uint64_t log_offset = 0;  // the log's size before this start: its output begins there
};

// Returns once every daemon with a readiness test passes it: a TCP connection from inside
// its node to `ready.port` on one of the node's own addresses (loopback included)
// succeeds, or `ready.run` exits 0. Tests are repeated (50 ms apart, doubling to 500 ms;
// a daemon's exit wakes the wait at once). Throws LabError naming the daemon, how it ended
// (or what its test last said) and the last lines of its output, when one exits before
// all are ready, or one is not ready within its ready_timeout_s. `netns_fds`: by node index.
void wait_until_ready(const topology::Topology& topo, const std::vector<int>& netns_fds,
                      const std::vector<StartedDaemon>& started);

// How a daemon ended, as words: "exited with status 3", "was killed by signal 9". Waits
// up to a second for its supervisor to record it.
std::string describe_daemon_end(const std::string& log);

}  // namespace labctl::engine::detail
