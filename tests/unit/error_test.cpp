#include <cerrno>

#include <gtest/gtest.h>

#include "base/error.hpp"

namespace labctl {
namespace {

TEST(KernelError, NamesObjectOperationAndErrno) {
    KernelError e(EEXIST, "r1: adding 10.0.1.1/24 to eth1");
    EXPECT_STREQ(e.what(), "r1: adding 10.0.1.1/24 to eth1: File exists (EEXIST)");
    EXPECT_EQ(e.errno_value(), EEXIST);
}

TEST(KernelError, AppendsKernelMessage) {
    KernelError e(EINVAL, "h1: creating eth0", "Invalid prefix");
    EXPECT_STREQ(e.what(), "h1: creating eth0: Invalid argument (EINVAL): Invalid prefix");
    EXPECT_STREQ(e.prefixed("lab").what(),
                 "lab: h1: creating eth0: Invalid argument (EINVAL): Invalid prefix");
}

TEST(TopologyError, OneLinePerProblem) {
    TopologyError e("t.json", {{"/links/3/endpoints/1", "no node \"r9\""}, {"", "line 1"}});
    EXPECT_STREQ(e.what(), "t.json: /links/3/endpoints/1: no node \"r9\"\nt.json: line 1");
}

}  // namespace
}  // namespace labctl
