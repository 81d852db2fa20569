#pragma once
// The one way the C++ tests expect an error: instead of try { ...; FAIL(); } catch (...) {}.
//
//   auto e = expect_kernel_error([&] { netns::open(name); }, ENOENT);
//   EXPECT_THAT(e.what(), HasSubstr(name));
//
// A call that throws nothing, or another type, or a KernelError with another errno, is a
// test failure reported at the caller's line; the test goes on with a stand-in error whose
// message says so, so that the checks after it fail too instead of crashing.

#include <gtest/gtest.h>

#include <exception>
#include <optional>
#include <source_location>
#include <string>
#include <typeinfo>
#include <utility>

#include "base/error.hpp"

namespace labctl::testing {

// Runs f(); returns the E it threw, or nothing (after recording a failure) when it threw no E.
template <typename E, typename F>
std::optional<E> expect_error(F&& f, std::source_location where = std::source_location::current()) {
    try {
        std::forward<F>(f)();
    } catch (const E& e) {
        return e;
    } catch (const std::exception& e) {
        ADD_FAILURE_AT(where.file_name(), where.line())
            << "expected " << typeid(E).name() << ", got " << typeid(e).name() << ": " << e.what();
        return std::nullopt;
    }
    ADD_FAILURE_AT(where.file_name(), where.line()) << "expected " << typeid(E).name() << ", nothing was thrown";
    return std::nullopt;
}

// Runs f(); returns the KernelError it threw, whose errno must be `expected_errno` (0: any).
inline constexpr int kAnyErrno = 0;
template <typename F>
KernelError expect_kernel_error(F&& f, int expected_errno = kAnyErrno,
                                std::source_location where = std::source_location::current()) {
    auto e = expect_error<KernelError>(std::forward<F>(f), where);
    if (!e) return KernelError(0, "expect_kernel_error: no KernelError was thrown");
    if (expected_errno != kAnyErrno && e->errno_value() != expected_errno)
        ADD_FAILURE_AT(where.file_name(), where.line())
            << "expected " << errno_name(expected_errno) << ", got " << e->what();
    return *e;
}

}  // namespace labctl::testing
