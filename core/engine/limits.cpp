// Host limits: the fd budget of a lab, the room in the host's neighbour table, the
// warnings about them, and the kernel features labs use.
#include <sys/resource.h>

#include <algorithm>
#include <fstream>
#include <map>

#include "base/error.hpp"
#include "engine/internal.hpp"
#include "engine/lab.hpp"
#include "realize/realize.hpp"
#include "rtnl/rtnl.hpp"

namespace labctl::engine {

using namespace topology;
using Json = nlohmann::json;

namespace detail {

// Building holds namespace fds and netlink sockets for a bounded number of nodes at once
// (realize::fds_held_at_most), and the checks after it run in waves sized by the limit
// (chunks.hpp): what a lab needs no longer grows with it. Refuse, before anything is
// touched, a limit too low even for that, instead of failing half-way with EMFILE.
void require_fd_budget(const Topology& topo) {
    constexpr rlim_t kSpare = 64;
    const rlim_t need = realize::fds_held_at_most(topo.nodes.size()) + kSpare;
    struct rlimit rl {};
    if (::getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur >= need) return;
    throw LabError("lab " + topo.name + " has " + std::to_string(topo.nodes.size()) + " nodes and needs about " +
                       std::to_string(need) +
                       " open files (a namespace and a netlink socket for each of the nodes built at once), "
                       "but this process may open only " +
                       std::to_string(rl.rlim_cur) + " (RLIMIT_NOFILE); raise the limit (ulimit -n " +
                       std::to_string(need) + ") and run it again. Nothing was touched",
                   EMFILE);
}

// Free entries of the host-wide neighbour table of `proto` ("arp_cache", "ndisc_cache"):
// gc_thresh3 minus the entries of every namespace (/proc/net/stat/<proto>, first column,
// hex; the table is global, so any namespace's file shows it). Read only, never changed.
long neighbour_room(const std::string& proto, const std::string& family) {
    long limit = -1;
    {
        std::ifstream f("/proc/sys/net/" + family + "/neigh/default/gc_thresh3");
        f >> limit;
        if (!f) return -1;
    }
    std::ifstream stat("/proc/net/stat/" + proto);
    std::string header, entries;
    if (!std::getline(stat, header) || !(stat >> entries)) return -1;
    return limit - std::stol(entries, nullptr, 16);
}

}  // namespace detail

namespace {

// Layer-2 segments: interfaces joined by a veth link or by a bridge are in one segment.
// Returns, per segment, how many interfaces in it have an address.
std::vector<std::size_t> addressed_per_segment(const Topology& topo) {
    std::vector<std::size_t> base(topo.nodes.size() + 1, 0);
    for (std::size_t n = 0; n < topo.nodes.size(); ++n) base[n + 1] = base[n] + topo.nodes[n].interfaces.size();
    std::vector<std::size_t> parent(base.back());
    for (std::size_t i = 0; i < parent.size(); ++i) parent[i] = i;
    auto find = [&](std::size_t x) {
        while (parent[x] != x) x = parent[x] = parent[parent[x]];
        return x;
    };
    auto join = [&](std::size_t a, std::size_t b) { parent[find(a)] = find(b); };
    for (const auto& l : topo.links)
        join(base[l.ends[0].node] + l.ends[0].interface, base[l.ends[1].node] + l.ends[1].interface);
    for (std::size_t n = 0; n < topo.nodes.size(); ++n)
        for (std::size_t i = 0; i < topo.nodes[n].interfaces.size(); ++i)
            if (auto m = topo.nodes[n].interfaces[i].master) join(base[n] + i, base[n] + *m);
    std::map<std::size_t, std::size_t> count;
    for (std::size_t n = 0; n < topo.nodes.size(); ++n)
        for (std::size_t i = 0; i < topo.nodes[n].interfaces.size(); ++i) {
            const auto& iface = topo.nodes[n].interfaces[i];
            if (!iface.addresses.empty() && iface.type != InterfaceType::loopback) ++count[find(base[n] + i)];
        }
    std::vector<std::size_t> out;
    for (const auto& [seg, k] : count) out.push_back(k);
    return out;
}

long read_long(const std::string& path) {
    std::ifstream f(path);
    long v = -1;
    f >> v;
    return f ? v : -1;
}

}  // namespace

std::vector<std::string> Lab::host_limit_warnings(bool all_pairs) const {
    // The neighbour (ARP/ND) table limit is shared by all namespaces of the host.
    long limit = read_long("/proc/sys/net/ipv4/neigh/default/gc_thresh3");
    if (limit <= 0) return {};
    std::size_t need = 0;
    if (all_pairs) {
        for (auto k : addressed_per_segment(topo_)) need += k * (k - 1);
    } else {
        // Pings and TCP checks resolve neighbours; command checks do not (as far as we know).
        for (const auto& c : topo_.checks)
            if (c.kind != CheckKind::command) need += 2;
    }
    if (need <= static_cast<std::size_t>(limit)) return {};
    return {"lab " + topo_.name + (all_pairs ? ": pinging all pairs needs about " : ": its checks need about ") +
            std::to_string(need) + " neighbour (ARP/ND) entries, and this host allows " + std::to_string(limit) +
            " for all namespaces together (gc_thresh3); labctl pings in waves that fit what is free of it and "
            "flushes the lab's own entries between waves, which takes longer. Raise "
            "net.ipv4.neigh.default.gc_thresh3 and net.ipv6.neigh.default.gc_thresh3 (with gc_thresh2 below "
            "them) to at least " +
            std::to_string(need + need / 4) + " to ping in one wave."};
}

std::vector<KernelFeature> kernel_features() {
    require_privileges();
    using F = rtnl::Feature;
    const std::vector<std::pair<F, std::string>> all = {
        {F::veth, "links"},
        {F::bridge, "switches and bridge interfaces"},
        {F::tuntap, "tap and tun interfaces"},
        {F::netem, "link impairments (delay, jitter, loss, duplicate, reorder)"},
        {F::tbf, "rate limits (impair.rate_mbit alone)"},
        {F::vlan_8021q, "vlan interfaces"},
        {F::bridge_vlan_filtering, "switches with vlan_filtering"},
        {F::dummy, "dummy interfaces"}};
    std::vector<F> wanted;
    for (const auto& [f, use] : all) wanted.push_back(f);
    auto missing = rtnl::missing_features(wanted);
    std::vector<KernelFeature> out;
    for (const auto& [f, use] : all)
        out.push_back({rtnl::feature_name(f), rtnl::feature_config(f), use,
                       std::find(missing.begin(), missing.end(), f) == missing.end()});
    return out;
}

}  // namespace labctl::engine
