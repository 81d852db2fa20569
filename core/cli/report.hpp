#pragma once
// Internal to cli/: how the subcommands of commands.cpp report (report.cpp): the table of
// check results, the JSON of a check report and of a plan's changes, the JUnit file,
// and the number and column formatting they share.

#include <chrono>
#include <cstddef>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "engine/lab.hpp"

namespace labctl::cli::detail {

// A duration in milliseconds with three decimals ("0.042").
std::string fmt_ms(double v);
// `s` padded with spaces to `width` (a table column).
std::string pad(std::string s, std::size_t width);
// Points as few digits as say them ("1", "2.5").
std::string fmt_points(double v);

// The checks as a table, a failed command's output, and the last line "N passed, M failed"
// (with the score when a check is weighted).
void print_checks(const std::vector<engine::CheckResult>& checks);
// The JSON every check report carries: the checks, whether all hold, the score.
nlohmann::json checks_report(const std::string& lab, const std::vector<engine::CheckResult>& checks);
nlohmann::json checks_json(const std::vector<engine::CheckResult>& checks);
bool all_ok(const std::vector<engine::CheckResult>& checks);
// The JUnit report, written whole to a temporary file and renamed over FILE.
void write_junit(const std::string& path, const std::string& lab, const std::vector<engine::CheckResult>& checks,
                 std::chrono::system_clock::time_point started, std::chrono::steady_clock::time_point clock);

// A plan's changes as JSON, and one line each ("no changes" for none).
nlohmann::json changes_json(const std::vector<plan::Change>& changes);
void print_changes(const std::vector<plan::Change>& changes);

}  // namespace labctl::cli::detail
