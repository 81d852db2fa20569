#include "engine/junit.hpp"

#include <cstdio>

namespace labctl::engine {

namespace {

constexpr const char* kReplacement = "\xEF\xBF\xBD";  // U+FFFD in UTF-8

// The length of the valid UTF-8 sequence at text[i], or 0 when it is not one.
std::size_t utf8_length(const std::string& text, std::size_t i) {
    const auto byte = [&](std::size_t k) { return static_cast<unsigned char>(text[k]); };
    const unsigned char c = byte(i);
    std::size_t n = c < 0x80 ? 1 : (c & 0xE0) == 0xC0 ? 2 : (c & 0xF0) == 0xE0 ? 3 : (c & 0xF8) == 0xF0 ? 4 : 0;
    if (n == 0 || i + n > text.size()) return 0;
    unsigned long code = n == 1 ? c : n == 2 ? (c & 0x1F) : n == 3 ? (c & 0x0F) : (c & 0x07);
    for (std::size_t k = 1; k < n; ++k) {
        if ((byte(i + k) & 0xC0) != 0x80) return 0;
        code = (code << 6) | (byte(i + k) & 0x3F);
    }
    static const unsigned long kMin[] = {0, 0, 0x80, 0x800, 0x10000};
    if (code < kMin[n] || code > 0x10FFFF || (code >= 0xD800 && code <= 0xDFFF)) return 0;  // overlong, surrogate
    if (code == 0xFFFE || code == 0xFFFF) return 0;                                         // not XML characters
    return n;
}

std::string number(double v) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%g", v);
    return buf;
}

std::string seconds_text(double v) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.3f", v);
    return buf;
}

std::string attr(const char* name, const std::string& value) {
    return std::string(" ") + name + "=\"" + xml_escape(value) + "\"";
}

// Why a check failed, one line: the message attribute.
std::string failure_message(const CheckResult& c) {
    if (!c.reason.empty()) return c.reason;
    if (c.kind != topology::CheckKind::command && c.expect == topology::Expect::unreachable)
        return "answered, but expected unreachable";
    return "failed";
}

}  // namespace

std::string xml_escape(const std::string& text) {
    std::string out;
    out.reserve(text.size());
    for (std::size_t i = 0; i < text.size();) {
        const std::size_t n = utf8_length(text, i);
        if (n == 0) {
            out += kReplacement;
            ++i;
            continue;
        }
        if (n > 1) {
            out.append(text, i, n);
            i += n;
            continue;
        }
        const char c = text[i++];
        switch (c) {
            case '&': out += "&amp;"; break;
            case '<': out += "&lt;"; break;
            case '>': out += "&gt;"; break;
            case '"': out += "&quot;"; break;
            case '\'': out += "&apos;"; break;
            case '\t':
            case '\n':
            case '\r': out += c; break;
            default:
                if (static_cast<unsigned char>(c) < 0x20 || c == 0x7F) out += kReplacement;
                else out += c;
        }
    }
    return out;
}

std::string to_junit(const std::string& lab, const std::vector<CheckResult>& checks, double seconds,
                     const std::string& timestamp) {
    std::size_t failures = 0;
    for (const auto& c : checks)
        if (!c.ok) ++failures;
    const Score score = score_of(checks);
    const std::string counts =
        attr("tests", std::to_string(checks.size())) + attr("failures", std::to_string(failures)) + attr("errors", "0");
    std::string x = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n";
    x += "<testsuites" + attr("name", "labctl") + counts + attr("time", seconds_text(seconds)) + ">\n";
    x += "  <testsuite" + attr("name", lab) + counts + attr("skipped", "0") + attr("time", seconds_text(seconds)) +
        (timestamp.empty() ? "" : attr("timestamp", timestamp)) + ">\n";
    x += "    <properties>\n";
    x += "      <property" + attr("name", "score") + attr("value", number(score.score)) + "/>\n";
    x += "      <property" + attr("name", "max_score") + attr("value", number(score.max_score)) + "/>\n";
    x += "    </properties>\n";
    for (const auto& c : checks) {
        x += "    <testcase" + attr("name", c.name) + attr("classname", lab) + attr("time", "0") + ">\n";
        x += "      <properties><property" + attr("name", "points") + attr("value", number(c.points)) +
            "/></properties>\n";
        if (!c.ok) {
            std::string detail =
                c.kind == topology::CheckKind::command ? c.output : c.from + " -> " + c.to + " (" + c.address + ")";
            x += "      <failure" + attr("message", failure_message(c)) + attr("type", topology::to_string(c.kind)) +
                ">" + xml_escape(detail) + "</failure>\n";
        }
        x += "    </testcase>\n";
    }
    x += "  </testsuite>\n</testsuites>\n";
    return x;
}

}  // namespace labctl::engine
