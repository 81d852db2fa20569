// Root qdiscs for link impairments: netem, or tbf when only a rate is asked for.
#include <netinet/in.h>

#include <linux/pkt_sched.h>
#include <linux/rtnetlink.h>

#include <algorithm>
#include <cmath>
#include <stdexcept>

#include "rtnl/rtnl.hpp"

namespace labctl::rtnl {

namespace {

// Kernel fact: PSCHED ticks are 64 ns (PSCHED_SHIFT 6); netem/tbf take some times in them.
constexpr int kPschedShift = 6;

std::uint32_t ns_to_ticks(double ns) {
    return static_cast<std::uint32_t>(std::min(ns / (1 << kPschedShift), static_cast<double>(UINT32_MAX)));
}

// tc's percentages: 0 = never, UINT32_MAX = always.
std::uint32_t probability(double pct) {
    return static_cast<std::uint32_t>(std::llround(pct / 100.0 * static_cast<double>(UINT32_MAX)));
}

void check(const std::optional<double>& v, const char* what, double max) {
    if (v && !(*v >= 0 && *v <= max))
        throw std::invalid_argument(std::string(what) + " out of range: " + std::to_string(*v));
}

nl::Message root_qdisc(std::uint16_t type, std::uint16_t flags, int ifindex) {
    nl::Message m(type, flags);
    auto& tcm = m.header<tcmsg>();
    tcm.tcm_family = AF_UNSPEC;
    tcm.tcm_ifindex = ifindex;
    tcm.tcm_handle = 0;  // the kernel picks one
    tcm.tcm_parent = TC_H_ROOT;
    return m;
}

std::uint64_t rate_bytes(double mbit) { return static_cast<std::uint64_t>(std::llround(mbit * 1e6 / 8)); }

}  // namespace

std::string impairment_qdisc_kind(const Netem& n) {
    const bool others = n.delay_ms || n.jitter_ms || n.loss_pct || n.duplicate_pct || n.reorder_pct || n.limit_packets;
    return n.rate_mbit && !others ? "tbf" : "netem";
}

nl::Message netem_add(int ifindex, const Netem& n, bool replace) {
    check(n.delay_ms, "delay_ms", 1e7);
    check(n.jitter_ms, "jitter_ms", 1e7);
    check(n.loss_pct, "loss_pct", 100);
    check(n.duplicate_pct, "duplicate_pct", 100);
    check(n.reorder_pct, "reorder_pct", 100);
    check(n.rate_mbit, "rate_mbit", 1e9);
    if (n.rate_mbit && *n.rate_mbit <= 0) throw std::invalid_argument("rate_mbit must be positive");
    if (!n.delay_ms && !n.jitter_ms && !n.loss_pct && !n.duplicate_pct && !n.reorder_pct && !n.rate_mbit &&
        !n.limit_packets)
        throw std::invalid_argument("no impairment given");

    nl::Message m = root_qdisc(RTM_NEWQDISC, NLM_F_CREATE | (replace ? NLM_F_REPLACE : NLM_F_EXCL), ifindex);
    if (impairment_qdisc_kind(n) == "tbf") {
        const std::uint64_t rate = rate_bytes(*n.rate_mbit);
        // 10 ms worth of traffic, at least two full-size frames; queue 50 ms beyond that.
        const auto burst = static_cast<std::uint32_t>(std::clamp<std::uint64_t>(rate / 100, 3000, UINT32_MAX));
        const auto limit = static_cast<std::uint32_t>(std::min<std::uint64_t>(burst + rate / 20, UINT32_MAX));
        m.put_strz(TCA_KIND, "tbf");
        auto opts = m.nest(TCA_OPTIONS);
        tc_tbf_qopt q{};
        q.rate.rate = static_cast<std::uint32_t>(std::min<std::uint64_t>(rate, UINT32_MAX));
        // A link layer other than UNAWARE tells the kernel not to expect a rate table.
        q.rate.linklayer = TC_LINKLAYER_ETHERNET;
        q.limit = limit;
        q.buffer = ns_to_ticks(static_cast<double>(burst) * 1e9 / static_cast<double>(rate));
        m.put_bytes(TCA_TBF_PARMS, &q, sizeof q);
        if (rate > UINT32_MAX) m.put_u64(TCA_TBF_RATE64, rate);
        m.put_u32(TCA_TBF_BURST, burst);
        opts.end();
        return m;
    }

    m.put_strz(TCA_KIND, "netem");
    // netem's TCA_OPTIONS is a struct tc_netem_qopt followed by TCA_NETEM_* attributes.
    auto opts = m.nest_plain(TCA_OPTIONS);
    tc_netem_qopt q{};
    const double delay_ns = n.delay_ms.value_or(0) * 1e6;
    const double jitter_ns = n.jitter_ms.value_or(0) * 1e6;
    q.latency = ns_to_ticks(delay_ns);
    q.jitter = ns_to_ticks(jitter_ns);
    q.limit = n.limit_packets.value_or(1000);
    q.loss = probability(n.loss_pct.value_or(0));
    q.duplicate = probability(n.duplicate_pct.value_or(0));
    // As tc: a reorder probability without a gap means gap 1, i.e. each packet is sent
    // at once, ahead of the delayed ones, with that probability.
    if (n.reorder_pct && *n.reorder_pct > 0) q.gap = 1;
    m.put_raw(&q, sizeof q);
    if (n.reorder_pct && *n.reorder_pct > 0) {
        tc_netem_reorder r{};
        r.probability = probability(*n.reorder_pct);
        m.put_bytes(TCA_NETEM_REORDER, &r, sizeof r);
    }
    if (n.rate_mbit) {
        const std::uint64_t rate = rate_bytes(*n.rate_mbit);
        tc_netem_rate r{};
        r.rate = static_cast<std::uint32_t>(std::min<std::uint64_t>(rate, UINT32_MAX));
        m.put_bytes(TCA_NETEM_RATE, &r, sizeof r);
        if (rate > UINT32_MAX) m.put_u64(TCA_NETEM_RATE64, rate);
    }
    // The 64-bit nanosecond forms override the tick fields (kernel >= 4.15); like tc,
    // send them only when the ticks overflow (delays over ~274 s).
    if (delay_ns / (1 << kPschedShift) > UINT32_MAX)
        m.put_s64(TCA_NETEM_LATENCY64, static_cast<std::int64_t>(delay_ns));
    if (jitter_ns / (1 << kPschedShift) > UINT32_MAX)
        m.put_s64(TCA_NETEM_JITTER64, static_cast<std::int64_t>(jitter_ns));
    opts.end();
    return m;
}

nl::Message qdisc_del_root(int ifindex) { return root_qdisc(RTM_DELQDISC, 0, ifindex); }

}  // namespace labctl::rtnl
