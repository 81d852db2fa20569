#pragma once
// `labctl capture`: its options, and running it. Kept apart from the main command table
// so that the table needs two lines for it.

#include <CLI/CLI.hpp>
#include <cstdint>
#include <string>
#include <vector>

namespace labctl::cli {

class CaptureCommand {
public:
    // Adds the subcommand to `app`.
    explicit CaptureCommand(CLI::App& app);
    bool parsed() const { return command_->parsed(); }
    // Captures; returns the exit code (0 done, 2 bad request, 3 failed).
    int run() const;

private:
    CLI::App* command_;
    std::string lab_, output_, filter_;
    std::vector<std::string> interfaces_;
    bool all_ = false;
    std::uint64_t count_ = 0;
    double duration_s_ = 0;
};

}  // namespace labctl::cli
