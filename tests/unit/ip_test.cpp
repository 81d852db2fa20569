#include <gtest/gtest.h>

#include "base/ip.hpp"

namespace labctl {
namespace {

TEST(IpPrefix, ParsesBothFamilies) {
    auto v4 = IpPrefix::parse("10.0.1.10/24");
    ASSERT_TRUE(v4);
    EXPECT_EQ(v4->address.family, AF_INET);
    EXPECT_EQ(v4->network().to_string(), "10.0.1.0");
    EXPECT_EQ(v4->broadcast().to_string(), "10.0.1.255");
    auto v6 = IpPrefix::parse("fd00:1::10/64");
    ASSERT_TRUE(v6);
    EXPECT_EQ(v6->to_string(), "fd00:1::10/64");
    EXPECT_EQ(v6->network().to_string(), "fd00:1::");
}

TEST(IpPrefix, RejectsMalformed) {
    for (const char* bad : {"10.0.1.10", "10.0.1.10/33", "fd00::1/129", "10.0.1/24", "10.0.0.1/-1", "10.0.0.1/",
                            "10.0.0.1/2x", "x/24", "10.0.0.1/024"})
        EXPECT_FALSE(IpPrefix::parse(bad)) << bad;
}

TEST(IpPrefix, Contains) {
    auto p = *IpPrefix::parse("10.0.12.0/30");
    EXPECT_TRUE(p.contains(*IpAddress::parse("10.0.12.2")));
    EXPECT_FALSE(p.contains(*IpAddress::parse("10.0.12.4")));
    EXPECT_FALSE(p.contains(*IpAddress::parse("fd00::1")));
}

}  // namespace
}  // namespace labctl
