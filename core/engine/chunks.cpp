#include "engine/chunks.hpp"

#include <sys/resource.h>

#include <algorithm>
#include <set>
#include <tuple>

namespace labctl::engine::detail {

std::size_t namespaces_at_once() {
    constexpr rlim_t kMin = 16, kMax = 512;
    struct rlimit rl {};
    if (::getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY) return kMax;
    return static_cast<std::size_t>(std::clamp(rl.rlim_cur / 4, kMin, kMax));
}

std::vector<std::size_t> probe_waves(const std::vector<ProbeCost>& probes, std::size_t max_fds,
                                     std::size_t max_probes) {
    std::vector<std::size_t> ends;
    std::set<std::size_t> sources;
    std::set<std::tuple<std::size_t, int, std::string>> sockets;
    std::size_t fds = 0, first = 0;
    auto cost = [&](const ProbeCost& p) -> std::size_t {
        const std::size_t n = sources.count(p.source) ? 0 : 1;
        if (p.tcp) return n + 1;
        return n + (sockets.count({p.source, p.family, ""}) ? 0 : 1) +
            (p.bind_ifname.empty() || sockets.count({p.source, p.family, p.bind_ifname}) ? 0 : 1);
    };
    for (std::size_t i = 0; i < probes.size(); ++i) {
        const ProbeCost& p = probes[i];
        if (i > first && (fds + cost(p) > max_fds || i - first >= max_probes)) {
            ends.push_back(i);
            first = i;
            sources.clear();
            sockets.clear();
            fds = 0;
        }
        fds += cost(p);
        sources.insert(p.source);
        if (p.tcp) continue;
        sockets.insert({p.source, p.family, ""});
        if (!p.bind_ifname.empty()) sockets.insert({p.source, p.family, p.bind_ifname});
    }
    if (!probes.empty()) ends.push_back(probes.size());
    return ends;
}

}  // namespace labctl::engine::detail
