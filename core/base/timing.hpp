#pragma once
// Step timings (`LABCTL_TIMINGS=1 labctl up`, bench/README.md) without printing: library
// code reports each step's wall time to a sink; the CLI installs one that prints it.
// Without a sink nothing is measured or reported (the Python module installs none).

#include <chrono>
#include <functional>
#include <string_view>

namespace labctl {

// Called with a step's name ("creating veth pairs") and its wall time in seconds, on the
// thread that ran the step.
using TimingSink = std::function<void(std::string_view step, double seconds)>;

// Installs `sink` (empty: none) for the whole process. Call it before any work starts
// (the CLI does, in main); it is not synchronized with report_timing.
void set_timing_sink(TimingSink sink);

// True when a sink is installed: callers may skip measuring otherwise.
bool timings_wanted() noexcept;

// Reports a step's wall time to the sink, if there is one.
void report_timing(std::string_view step, double seconds);

// Reports the wall time of its own lifetime as `step` (when a sink is installed).
class ScopedTiming {
public:
    explicit ScopedTiming(const char* step) : step_(step), on_(timings_wanted()) {}
    ScopedTiming(const ScopedTiming&) = delete;
    ScopedTiming& operator=(const ScopedTiming&) = delete;
    ~ScopedTiming() {
        if (on_) report_timing(step_, std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count());
    }

private:
    const char* step_;
    bool on_;
    std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now();
};

}  // namespace labctl
