#pragma once
// Check results as JUnit XML, the report CI systems read (`labctl verify --junit FILE`):
// one <testsuite> named after the lab, one <testcase> per check named by the check's
// name (else "FROM -> TO"), a <failure> with the reason for each check that failed, and
// the points as properties. Text is escaped for XML 1.0: markup characters become
// entities, characters XML cannot carry (most control characters, invalid UTF-8) become
// U+FFFD.

#include <string>
#include <vector>

#include "engine/lab.hpp"

namespace labctl::engine {

// `seconds`: how long the checks took (the suite's time attribute). `timestamp`: ISO 8601
// of when they started ("2026-12-01T05:30:00"), or empty to leave it out.
std::string to_junit(const std::string& lab, const std::vector<CheckResult>& checks, double seconds,
                     const std::string& timestamp = {});

// `text` made safe inside an XML attribute or element.
std::string xml_escape(const std::string& text);

}  // namespace labctl::engine
