#pragma once
// A Plan: ordered steps, each with its undo. Running it either completes every step or,
// when one throws, undoes the steps begun so far (the failing one included: it may have
// done part of its work) in reverse order, then rethrows.

#include <atomic>
#include <functional>
#include <string>
#include <vector>

namespace labctl::realize {

struct Step {
    std::string what;            // "creating namespaces"
    std::function<void()> run;
    std::function<void()> undo;  // may be empty; must tolerate partial work
};

class Plan {
public:
    void add(Step step) { steps_.push_back(std::move(step)); }
    // Runs every step. On an exception: undoes (errors of undo are collected into
    // `undo_errors`, never thrown over the original), then rethrows the original.
    // When `cancel` becomes true (a signal handler sets it), the next step is not begun:
    // LabError("interrupted") is thrown and everything undone.
    void run(const std::atomic<bool>* cancel = nullptr);
    const std::vector<std::string>& undo_errors() const noexcept { return undo_errors_; }

private:
    std::vector<Step> steps_;
    std::vector<std::string> undo_errors_;
};

}  // namespace labctl::realize
