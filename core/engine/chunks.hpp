#pragma once
// Internal to engine/: holding a bounded number of descriptors however many nodes a lab
// has. verify, down, apply and the wait for daemons work through the lab's namespaces
// in chunks: open a chunk's namespaces (and sockets in them), use them, close them,
// then the next. What they hold at once depends on the fd limit, never on the lab.

#include <cstddef>
#include <string>
#include <vector>

namespace labctl::engine::detail {

// How many of a lab's namespaces to hold open at once: a quarter of the soft
// RLIMIT_NOFILE (each namespace comes with a socket, a duplicate or a pidfd or two, and
// the process has its own files), at least 16 and at most 512. Throws nothing.
std::size_t namespaces_at_once();

// Calls fn(first, last) for consecutive ranges [first, last) covering [0, n) in order,
// each at most `size` long (size 0 counts as 1).
template <class F>
void for_each_chunk(std::size_t n, std::size_t size, F&& fn) {
    if (size == 0) size = 1;
    for (std::size_t first = 0; first < n; first += size) fn(first, first + size < n ? first + size : n);
}

// What a probe makes the pinger hold while it runs (ping/setup.cpp): its source's
// namespace fd; for ICMP, a socket per source and family, and one per bind interface;
// for TCP, a socket of its own.
struct ProbeCost {
    std::size_t source = 0;  // the source node's index
    int family = 0;          // AF_INET, AF_INET6
    std::string bind_ifname;
    bool tcp = false;
};

// Splits the probes, in order, into consecutive waves none of which holds more than
// `max_fds` descriptors (ProbeCost) or has more than `max_probes` probes; a wave has at
// least one probe. Returns each wave's end (one past its last probe), ascending; the
// last is probes.size(). Throws nothing but std::bad_alloc.
std::vector<std::size_t> probe_waves(const std::vector<ProbeCost>& probes, std::size_t max_fds, std::size_t max_probes);

}  // namespace labctl::engine::detail
