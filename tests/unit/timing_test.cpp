#include <string>
#include <utility>
#include <vector>

#include <gtest/gtest.h>

#include "base/timing.hpp"

namespace labctl {
namespace {

// Library code reports step timings only to an installed sink, and never prints.
TEST(Timing, ReportsToTheSinkOnlyWhenOneIsInstalled) {
    std::vector<std::pair<std::string, double>> got;
    set_timing_sink({});
    EXPECT_FALSE(timings_wanted());
    { ScopedTiming t("unseen"); }
    report_timing("unseen either", 1.0);
    set_timing_sink([&](std::string_view step, double seconds) { got.emplace_back(std::string(step), seconds); });
    EXPECT_TRUE(timings_wanted());
    { ScopedTiming t("planning"); }
    report_timing("creating veth pairs", 0.25);
    set_timing_sink({});
    ASSERT_EQ(got.size(), 2u);
    EXPECT_EQ(got[0].first, "planning");
    EXPECT_GE(got[0].second, 0.0);
    EXPECT_EQ(got[1], std::make_pair(std::string("creating veth pairs"), 0.25));
}

}  // namespace
}  // namespace labctl
