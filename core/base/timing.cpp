#include "base/timing.hpp"

#include <utility>

namespace labctl {

namespace {
TimingSink& sink() {
    static TimingSink installed;
    return installed;
}
}  // namespace

void set_timing_sink(TimingSink s) { sink() = std::move(s); }

bool timings_wanted() noexcept { return static_cast<bool>(sink()); }

void report_timing(std::string_view step, double seconds) {
    if (const auto& s = sink()) s(step, seconds);
}

}  // namespace labctl
