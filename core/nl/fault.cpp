// Fault injection for the netlink layer (nl.hpp: FaultInjection): requests failed with a
// chosen errno, dump parts flagged interrupted, at a seeded random fraction, so tests can
// prove that transient failures are retried and the rest reported.

#include <cstdlib>
#include <cstring>
#include <mutex>
#include <optional>
#include <random>
#include <string>
#include <string_view>

#include "nl/fault.hpp"
#include "nl/nl.hpp"

namespace labctl::nl {

namespace {

struct FaultState {
    std::mutex mutex;
    bool env_read = false;
    std::optional<FaultInjection> faults;
    std::mt19937_64 rng;
};

FaultState& fault_state() {
    static FaultState state;
    return state;
}

void activate(FaultState& s, std::optional<FaultInjection> faults) {
    s.faults = std::move(faults);
    if (s.faults) s.rng.seed(s.faults->seed);
}

// Reads LABCTL_NL_FAULTS once per process (set_fault_injection overrides it).
void injected_fault_env() {
    auto& s = fault_state();
    std::lock_guard lock(s.mutex);
    if (s.env_read) return;
    s.env_read = true;
    if (const char* spec = std::getenv("LABCTL_NL_FAULTS")) activate(s, parse_fault_spec(spec));
}

int errno_from_name(std::string_view name) {
    if (name.empty()) return 0;
    if (name.find_first_not_of("0123456789") == std::string_view::npos) return std::atoi(std::string(name).c_str());
    for (int e = 1; e < 200; ++e)
        if (const char* n = ::strerrorname_np(e); n && name == n) return e;
    return 0;
}

}  // namespace

namespace detail {

int injected_fault() {
    injected_fault_env();
    auto& s = fault_state();
    std::lock_guard lock(s.mutex);
    if (!s.faults || s.faults->errnos.empty() || s.faults->fraction <= 0) return 0;
    if (std::uniform_real_distribution<double>(0, 1)(s.rng) >= s.faults->fraction) return 0;
    const auto& e = s.faults->errnos;
    return e[std::uniform_int_distribution<std::size_t>(0, e.size() - 1)(s.rng)];
}

bool injected_dump_interrupt() {
    injected_fault_env();
    auto& s = fault_state();
    std::lock_guard lock(s.mutex);
    if (!s.faults || !s.faults->dump_intr || s.faults->fraction <= 0) return false;
    return std::uniform_real_distribution<double>(0, 1)(s.rng) < s.faults->fraction;
}

}  // namespace detail

void set_fault_injection(std::optional<FaultInjection> faults) {
    auto& s = fault_state();
    std::lock_guard lock(s.mutex);
    s.env_read = true;
    activate(s, std::move(faults));
}

std::optional<FaultInjection> parse_fault_spec(std::string_view spec) {
    FaultInjection f;
    const auto c1 = spec.find(':');
    if (c1 == std::string_view::npos) return std::nullopt;
    std::string_view names = spec.substr(0, c1);
    std::string_view rest = spec.substr(c1 + 1);
    const auto c2 = rest.find(':');
    const std::string fraction(rest.substr(0, c2));
    const std::string seed(c2 == std::string_view::npos ? "" : rest.substr(c2 + 1));
    while (!names.empty()) {
        const auto comma = names.find(',');
        const auto name = names.substr(0, comma);
        const int e = name == "DUMP_INTR" ? -1 : errno_from_name(name);
        if (e == -1) {
            f.dump_intr = true;
        } else if (e <= 0) {
            return std::nullopt;
        } else {
            f.errnos.push_back(e);
        }
        names = comma == std::string_view::npos ? std::string_view{} : names.substr(comma + 1);
    }
    char* end = nullptr;
    f.fraction = std::strtod(fraction.c_str(), &end);
    if (fraction.empty() || *end || f.fraction < 0 || f.fraction > 1 || (f.errnos.empty() && !f.dump_intr))
        return std::nullopt;
    if (!seed.empty()) {
        f.seed = std::strtoull(seed.c_str(), &end, 10);
        if (*end) return std::nullopt;
    }
    return f;
}

}  // namespace labctl::nl
