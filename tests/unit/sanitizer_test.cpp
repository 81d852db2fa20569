// In the sanitizer build (`make sanitize`) these prove that the unit tests run
// instrumented: each commits one error ASan or UBSan must stop. Absent elsewhere.
#include <gtest/gtest.h>

#include <climits>
#include <memory>

#if defined(LABCTL_SANITIZE)

namespace {

// Kept out of the optimizer's sight so the faulty access really happens.
template <typename T>
T launder(T value) {
    asm volatile("" : "+r"(value));
    return value;
}

TEST(SanitizerDeathTest, AddressSanitizerStopsAHeapOverflow) {
    EXPECT_DEATH(
        {
            auto buffer = std::make_unique<int[]>(4);
            volatile int read = buffer[launder(4)];
            (void)read;
        },
        "heap-buffer-overflow");
}

TEST(SanitizerDeathTest, AddressSanitizerStopsAUseAfterFree) {
    EXPECT_DEATH(
        {
            int* p = new int(7);
            delete p;
            volatile int read = *launder(p);
            (void)read;
        },
        "heap-use-after-free");
}

TEST(SanitizerDeathTest, UndefinedSanitizerStopsASignedOverflow) {
    EXPECT_DEATH(
        {
            volatile int sum = launder(INT_MAX) + launder(1);
            (void)sum;
        },
        "signed integer overflow");
}

}  // namespace

#endif
