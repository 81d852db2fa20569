// Probing for kernel features by trying them in a throw-away (unnamed) namespace: the only test
// that also covers modules loaded on demand and features compiled out.
#include <sched.h>

#include <cerrno>
#include <exception>
#include <thread>

#include "base/error.hpp"
#include "rtnl/rtnl.hpp"
#include "userns/userns.hpp"

namespace labctl::rtnl {

namespace {
std::vector<Feature> probe_here(const std::vector<Feature>& wanted);

// The one table of kernel features: what labctl calls each, the kernel option that
// provides it, and what in a topology needs it (for the refusal message). The probe of each
// is in probe_here() below; realize/ decides which ones a topology wants.
struct FeatureRow {
    Feature feature;
    const char* name;
    const char* config;
    const char* needed_by;  // "link impairments need ", or "this lab needs "
};
constexpr FeatureRow kFeatures[] = {
    {Feature::veth, "veth devices", "CONFIG_VETH", "this lab needs "},
    {Feature::bridge, "Linux bridges", "CONFIG_BRIDGE", "this lab needs "},
    {Feature::tuntap, "TUN/TAP devices", "CONFIG_TUN", "tap/tun interfaces need "},
    {Feature::netem, "the netem qdisc", "CONFIG_NET_SCH_NETEM", "link impairments need "},
    {Feature::tbf, "the tbf qdisc", "CONFIG_NET_SCH_TBF", "link impairments need "},
    {Feature::vlan_8021q, "802.1Q VLAN devices", "CONFIG_VLAN_8021Q", "vlan interfaces need "},
    {Feature::bridge_vlan_filtering, "bridge VLAN filtering", "CONFIG_BRIDGE_VLAN_FILTERING",
     "switches with vlan_filtering need "},
    {Feature::dummy, "dummy devices", "CONFIG_DUMMY", "dummy interfaces need "},
};

const FeatureRow* row_of(Feature f) {
    for (const auto& row : kFeatures)
        if (row.feature == f) return &row;
    return nullptr;
}

}  // namespace

std::string feature_name(Feature f) {
    const FeatureRow* row = row_of(f);
    return row ? row->name : "unknown feature";
}

std::string feature_config(Feature f) {
    const FeatureRow* row = row_of(f);
    return row ? row->config : "?";
}

std::string missing_feature_message(Feature f) {
    // The kernel may have TUN while this user may not open /dev/net/tun (rootless labs).
    if (f == Feature::tuntap)
        if (std::string denied = userns::tun_denied(); !denied.empty()) return denied;
    const FeatureRow* row = row_of(f);
    return std::string(row ? row->needed_by : "this lab needs ") + feature_name(f) + " (" + feature_config(f) +
        "); this kernel has none";
}

std::vector<Feature> missing_features(const std::vector<Feature>& wanted) {
    if (wanted.empty()) return {};
    // An unnamed namespace of a thread of our own: nothing in /run/netns, so a labctl
    // killed while probing leaves nothing behind; it goes with the thread.
    std::exception_ptr failure;
    std::vector<Feature> missing;
    std::thread prober([&] {
        try {
            if (::unshare(CLONE_NEWNET) != 0) throw_last_errno("probing kernel features: unshare(CLONE_NEWNET)");
            missing = probe_here(wanted);
        } catch (...) {
            failure = std::current_exception();
        }
    });
    prober.join();
    if (failure) std::rethrow_exception(failure);
    return missing;
}

namespace {
// Tries each feature in the calling thread's (fresh) namespace.
std::vector<Feature> probe_here(const std::vector<Feature>& wanted) {
    // Indexes inside the probe namespace: lo is 1.
    constexpr int kV0 = 2, kV1 = 3, kBr = 4;
    std::vector<Feature> missing;
    {
        auto h = Handle::open_here();
        auto attempt = [&](nl::Message m) {
            nl::Batch b;
            b.add(std::move(m), "probe");
            return b.run(h.socket()).front().error == 0;
        };
        const bool have_veth =
            attempt(veth_add({.a = {.name = "v0", .ifindex = kV0}, .b = {.name = "v1", .ifindex = kV1}}));
        const bool have_bridge = attempt(bridge_add({.name = "br0", .ifindex = kBr}, false));
        for (Feature f : wanted) {
            bool ok = false;
            switch (f) {
                case Feature::veth: ok = have_veth; break;
                case Feature::bridge: ok = have_bridge; break;
                case Feature::tuntap:
                    try {
                        tuntap_create_here("t0", true, std::nullopt, std::nullopt);
                        ok = true;
                    } catch (const KernelError&) {}
                    break;
                case Feature::netem: ok = have_veth && attempt(netem_add(kV0, {.delay_ms = 1})); break;
                case Feature::tbf: ok = have_veth && attempt(netem_add(kV1, {.rate_mbit = 100})); break;
                case Feature::vlan_8021q: ok = have_veth && attempt(vlan_add({.name = "v0.10"}, kV0, 10)); break;
                case Feature::bridge_vlan_filtering: ok = attempt(bridge_add({.name = "brv"}, true)); break;
                case Feature::dummy: ok = attempt(dummy_add({.name = "d0"})); break;
            }
            if (!ok) missing.push_back(f);
        }
    }
    return missing;
}

}  // namespace

}  // namespace labctl::rtnl
