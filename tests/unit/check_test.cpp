// Checks that grade: JUnit XML escaping and the report's shape, check labels, scores.

#include <gtest/gtest.h>

#include "base/error.hpp"
#include "engine/junit.hpp"
#include "topology/load.hpp"

namespace labctl {
namespace {

using engine::CheckResult;

TEST(JunitTest, EscapesMarkupControlCharactersAndInvalidUtf8) {
    EXPECT_EQ(engine::xml_escape("a<b>&\"c'"), "a&lt;b&gt;&amp;&quot;c&apos;");
    EXPECT_EQ(engine::xml_escape("tab\tnl\n"), "tab\tnl\n");
    EXPECT_EQ(engine::xml_escape(std::string("x\x01y", 3)), "x\xEF\xBF\xBDy");
    EXPECT_EQ(engine::xml_escape("caf\xC3\xA9"), "caf\xC3\xA9");                            // valid UTF-8 kept
    EXPECT_EQ(engine::xml_escape("\xC3"), "\xEF\xBF\xBD");                                  // truncated
    EXPECT_EQ(engine::xml_escape("\xC0\xAF"), "\xEF\xBF\xBD\xEF\xBF\xBD");                  // overlong '/'
    EXPECT_EQ(engine::xml_escape("\xED\xA0\x80"), "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD");  // surrogate
}

TEST(JunitTest, OneSuiteOneCasePerCheckFailuresWithReasons) {
    CheckResult ok;
    ok.name = "web answers";
    ok.ok = true;
    ok.points = 2;
    CheckResult bad;
    bad.name = "h1 -> h3";
    bad.from = "h1";
    bad.to = "h3";
    bad.address = "10.0.3.10";
    bad.reason = "No reply";
    std::string x = engine::to_junit("lab1", {ok, bad}, 1.5, "2026-12-01T05:00:00");
    EXPECT_NE(x.find("<testsuite name=\"lab1\" tests=\"2\" failures=\"1\""), std::string::npos) << x;
    EXPECT_NE(x.find("<testcase name=\"web answers\""), std::string::npos) << x;
    EXPECT_NE(x.find("<failure message=\"No reply\" type=\"ping\">h1 -&gt; h3 (10.0.3.10)</failure>"),
              std::string::npos)
        << x;
    EXPECT_NE(x.find("<property name=\"score\" value=\"2\"/>"), std::string::npos) << x;
    EXPECT_NE(x.find("<property name=\"max_score\" value=\"3\"/>"), std::string::npos) << x;
}

TEST(CheckLabelTest, NameElseFromArrowTo) {
    auto topo =
        topology::load_text(R"({"name": "l", "nodes": {"h1": {"interfaces": {"eth0": {"addresses": ["10.0.0.1/24"]}}},
        "h2": {"interfaces": {"eth0": {"addresses": ["10.0.0.2/24"]}}}},
        "links": [{"endpoints": ["h1:eth0", "h2:eth0"]}],
        "checks": [{"from": "h1", "to": "h2"}, {"from": "h1", "to": "h2", "port": 80, "points": 2.5},
                   {"name": "route", "on": "h1", "run": ["ip", "route"], "within_s": 3},
                   {"on": "h2", "run": ["true"]}]})",
                            "t.json");
    ASSERT_EQ(topo.checks.size(), 4u);
    EXPECT_EQ(topo.checks[0].label(), "h1 -> h2");
    EXPECT_EQ(topo.checks[1].label(), "h1 -> h2 port 80");
    EXPECT_EQ(topo.checks[1].points, 2.5);
    EXPECT_EQ(topo.checks[2].label(), "route");
    EXPECT_EQ(topo.checks[2].within_s, 3);
    EXPECT_EQ(topo.checks[2].kind, topology::CheckKind::command);
    EXPECT_EQ(topo.checks[3].label(), "h2: true");
    EXPECT_EQ(topo.checks[3].timeout_ms, 10000);
}

TEST(DaemonTest, ObjectsWithReadiness) {
    auto topo = topology::load_text(R"({"name": "l", "nodes": {"h1": {"daemons": [["sleep", "9"],
        {"run": ["srv"], "ready": {"port": 80}, "ready_timeout_s": 2.5},
        {"run": ["srv2"], "ready": {"run": ["test", "-e", "/x"]}}]}}})",
                                    "t.json");
    const auto& d = topo.nodes[0].daemons;
    ASSERT_EQ(d.size(), 3u);
    EXPECT_FALSE(d[0].has_readiness());
    EXPECT_EQ(d[1].ready_port, 80);
    EXPECT_EQ(d[1].ready_timeout_s, 2.5);
    EXPECT_EQ(d[2].ready_run, (std::vector<std::string>{"test", "-e", "/x"}));
    EXPECT_EQ(d[2].ready_timeout_s, 10);
    EXPECT_THROW(
        topology::load_text(R"({"name": "l", "nodes": {"h1": {"daemons": [{"run": ["x"], "ready": {}}]}}})", "t.json"),
        TopologyError);
}

}  // namespace
}  // namespace labctl
