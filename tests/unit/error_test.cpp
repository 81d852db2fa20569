#include <cerrno>
#include <string>
#include <tuple>

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
    EXPECT_STREQ(e.prefixed("lab").what(), "lab: h1: creating eth0: Invalid argument (EINVAL): Invalid prefix");
}

TEST(TopologyError, OneLinePerProblem) {
    TopologyError e("t.json", {{"/links/3/endpoints/1", "no node \"r9\""}, {"", "line 1"}});
    EXPECT_STREQ(e.what(), "t.json: /links/3/endpoints/1: no node \"r9\"\nt.json: line 1");
}

// One base: a single catch of labctl::Error sees every kind, with its errno and whether it
// is bad input (the CLI's exit 2).
TEST(Error, EveryKindIsAnErrorWithItsKind) {
    auto kind_of = [](auto&& throw_it) {
        try {
            throw_it();
        } catch (const Error& e) {
            return std::make_tuple(e.kind(), e.errno_value(), e.is_usage(), std::string(e.what()));
        }
        return std::make_tuple(Error::Kind::lab, -1, false, std::string("nothing thrown"));
    };
    EXPECT_EQ(
        kind_of([] { throw KernelError(EEXIST, "r1: creating eth0"); }),
        std::make_tuple(Error::Kind::kernel, EEXIST, false, std::string("r1: creating eth0: File exists (EEXIST)")));
    EXPECT_EQ(kind_of([] {
                  throw TopologyError("t.json", {{"/name", "bad"}});
              }),
              std::make_tuple(Error::Kind::topology, 0, true, std::string("t.json: /name: bad")));
    EXPECT_EQ(kind_of([] { throw LabError("lab x is already up", EEXIST); }),
              std::make_tuple(Error::Kind::lab, EEXIST, false, std::string("lab x is already up")));
    EXPECT_EQ(kind_of([] { throw UsageError("no node h9"); }),
              std::make_tuple(Error::Kind::lab, 0, true, std::string("no node h9")));
}

}  // namespace
}  // namespace labctl
