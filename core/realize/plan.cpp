#include "realize/plan.hpp"

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <exception>

#include "base/error.hpp"

namespace labctl::realize {

void Plan::run(const std::atomic<bool>* cancel) {
    // LABCTL_TIMINGS=1: each step's wall time on stderr (for profiling, bench/README.md).
    const bool timings = std::getenv("LABCTL_TIMINGS") != nullptr;
    std::size_t begun = 0;
    try {
        for (; begun < steps_.size(); ++begun) {
            if (cancel && cancel->load()) {
                --begun;  // nothing of this step was done; undo from the previous one
                throw LabError("interrupted before " + steps_[begun + 1].what + "; removed what was built", EINTR);
            }
            const auto start = std::chrono::steady_clock::now();
            steps_[begun].run();
            if (timings)
                std::fprintf(stderr, "labctl: %s: %.3f s\n", steps_[begun].what.c_str(),
                             std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
        }
    } catch (...) {
        auto original = std::current_exception();
        // begun may have wrapped to SIZE_MAX when cancelled before the first step.
        for (std::size_t i = begun == static_cast<std::size_t>(-1) ? 0 : std::min(begun + 1, steps_.size()); i-- > 0;) {
            if (!steps_[i].undo) continue;
            try {
                steps_[i].undo();
            } catch (const std::exception& e) {
                undo_errors_.push_back("undoing " + steps_[i].what + ": " + e.what());
            }
        }
        std::rethrow_exception(original);
    }
}

}  // namespace labctl::realize
