#include "cli/report.hpp"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <fstream>
#include <iostream>

#include "base/error.hpp"
#include "engine/junit.hpp"

namespace labctl::cli::detail {

std::string fmt_ms(double v) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.3f", v);
    return buf;
}

std::string pad(std::string s, std::size_t width) {
    if (s.size() < width) s.append(width - s.size(), ' ');
    return s;
}

std::string fmt_points(double v) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%g", v);
    return buf;
}

nlohmann::json checks_json(const std::vector<engine::CheckResult>& checks);
bool all_ok(const std::vector<engine::CheckResult>& checks);

void print_checks(const std::vector<engine::CheckResult>& checks) {
    if (checks.empty()) {
        std::cout << "0 passed, 0 failed\n";  // the last line of every check report
        return;
    }
    std::vector<std::vector<std::string>> rows;
    rows.push_back({"FROM", "TO", "ADDRESS", "EXPECT", "RESULT", "REPLIES", "RTT min/avg/max ms", "NOTE"});
    const auto score = engine::score_of(checks);
    for (const auto& c : checks) {
        if (c.kind == topology::CheckKind::command) {
            std::string expect = "exit " + std::to_string(c.expect_exit);
            if (c.expect_stdout) expect += ", stdout /" + *c.expect_stdout + "/";
            rows.push_back({c.from, c.to, "-", expect, c.ok ? "ok" : "FAIL", "-", "-", c.reason});
            continue;
        }
        std::string rtt = c.received ? fmt_ms(c.rtt_min) + "/" + fmt_ms(c.rtt_avg) + "/" + fmt_ms(c.rtt_max) : "-";
        std::string address = c.address;
        if (c.kind == topology::CheckKind::tcp)
            address = (c.address.find(':') != std::string::npos ? "[" + c.address + "]" : c.address) + ":" +
                std::to_string(c.port);
        rows.push_back({c.from, c.to, address, topology::to_string(c.expect), c.ok ? "ok" : "FAIL",
                        std::to_string(c.received) + "/" + std::to_string(c.sent), rtt, c.received ? "" : c.reason});
    }
    // A NAME column when a check is named, POINTS when one is weighted.
    const bool named = std::any_of(checks.begin(), checks.end(), [](const auto& c) { return c.named; });
    for (std::size_t i = 0; i < rows.size(); ++i) {
        if (score.any_weighted)
            rows[i].insert(rows[i].begin() + 4, i == 0 ? "POINTS" : fmt_points(checks[i - 1].points));
        if (named) rows[i].insert(rows[i].begin(), i == 0 ? "NAME" : checks[i - 1].name);
    }
    std::vector<std::size_t> width(rows[0].size(), 0);
    for (const auto& r : rows)
        for (std::size_t i = 0; i < r.size(); ++i) width[i] = std::max(width[i], r[i].size());
    for (const auto& r : rows) {
        std::string line;
        for (std::size_t i = 0; i < r.size(); ++i)
            line += (i ? "  " : "") + (i + 1 < r.size() ? pad(r[i], width[i]) : r[i]);
        while (!line.empty() && line.back() == ' ') line.pop_back();
        std::cout << line << "\n";
    }
    // What a failed command printed, to see why without running it again.
    for (const auto& c : checks) {
        if (c.ok || c.kind != topology::CheckKind::command) continue;
        std::cout << c.from << ": " << c.to << ": " << (c.output.empty() ? "no output" : "its output ends:") << "\n";
        std::size_t start = 0;
        while (start < c.output.size()) {
            std::size_t end = c.output.find('\n', start);
            if (end == std::string::npos) end = c.output.size();
            std::cout << "  | " << c.output.substr(start, end - start) << "\n";
            start = end + 1;
        }
    }
    auto failed = std::count_if(checks.begin(), checks.end(), [](const auto& c) { return !c.ok; });
    std::cout << checks.size() - static_cast<std::size_t>(failed) << " passed, " << failed << " failed";
    if (score.any_weighted) std::cout << ", score " << fmt_points(score.score) << "/" << fmt_points(score.max_score);
    std::cout << "\n";
}

// The JSON every check report carries: the checks, whether all hold, the score.
nlohmann::json checks_report(const std::string& lab, const std::vector<engine::CheckResult>& checks) {
    const auto score = engine::score_of(checks);
    return {{"lab", lab},
            {"checks", checks_json(checks)},
            {"ok", all_ok(checks)},
            {"score", score.score},
            {"max_score", score.max_score}};
}

nlohmann::json checks_json(const std::vector<engine::CheckResult>& checks) {
    nlohmann::json a = nlohmann::json::array();
    for (const auto& c : checks) a.push_back(engine::to_json(c));
    return a;
}

bool all_ok(const std::vector<engine::CheckResult>& checks) {
    return std::all_of(checks.begin(), checks.end(), [](const auto& c) { return c.ok; });
}

// The JUnit report, written whole to a temporary file and renamed over FILE.
void write_junit(const std::string& path, const std::string& lab, const std::vector<engine::CheckResult>& checks,
                 std::chrono::system_clock::time_point started, std::chrono::steady_clock::time_point clock) {
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - clock).count();
    const std::time_t t = std::chrono::system_clock::to_time_t(started);
    std::tm tm{};
    ::gmtime_r(&t, &tm);
    char stamp[32];
    std::strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%S", &tm);
    const std::string tmp = path + ".tmp";
    {
        std::ofstream f(tmp, std::ios::trunc);
        f << engine::to_junit(lab, checks, seconds, stamp);
        f.close();
        if (!f) throw LabError("writing the JUnit report " + tmp + " failed");
    }
    if (std::rename(tmp.c_str(), path.c_str()) != 0) {
        std::remove(tmp.c_str());
        throw_last_errno("writing the JUnit report: renaming " + tmp + " to " + path);
    }
}

nlohmann::json changes_json(const std::vector<plan::Change>& changes) {
    nlohmann::json a = nlohmann::json::array();
    for (const auto& c : changes)
        a.push_back({{"op", std::string(1, c.op)},
                     {"kind", c.kind},
                     {"target", c.target},
                     {"detail", c.detail},
                     {"line", c.line()}});
    return a;
}

void print_changes(const std::vector<plan::Change>& changes) {
    if (changes.empty()) std::cout << "no changes\n";
    for (const auto& c : changes) std::cout << c.line() << "\n";
    std::cout.flush();
}

}  // namespace labctl::cli::detail
