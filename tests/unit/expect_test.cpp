#include <cerrno>

#include <gtest/gtest-spi.h>
#include <gtest/gtest.h>

#include "base/error.hpp"
#include "expect.hpp"

namespace labctl {
namespace {

// The helper itself can fail: nothing thrown, another type, another errno.
TEST(ExpectKernelError, FailsWhenTheCallDoesNotThrowIt) {
    EXPECT_NONFATAL_FAILURE(testing::expect_kernel_error([] {}), "nothing was thrown");
    EXPECT_NONFATAL_FAILURE(testing::expect_kernel_error([] { throw LabError("refused"); }), "refused");
    EXPECT_NONFATAL_FAILURE(testing::expect_kernel_error([] { throw KernelError(EEXIST, "x"); }, ENOENT),
                            "expected ENOENT, got x: File exists (EEXIST)");
    auto e = testing::expect_kernel_error([] { throw KernelError(ENOENT, "h1: opening"); }, ENOENT);
    EXPECT_STREQ(e.what(), "h1: opening: No such file or directory (ENOENT)");
}

}  // namespace
}  // namespace labctl
