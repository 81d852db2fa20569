// serve's view of a lab: link and node states from live interface states, impairment text,
// checks as written; and the element ids the page finds in Graphviz's picture.

#include <gtest/gtest.h>

#include <map>
#include <set>
#include <nlohmann/json.hpp>

#include "graph/graph.hpp"
#include "serve/view.hpp"
#include "topology/load.hpp"

namespace labctl::serve {
namespace {

using Json = nlohmann::json;

const char* kLab = R"({
  "name": "v",
  "nodes": {
    "h1": { "interfaces": { "eth0": { "addresses": ["10.0.1.10/24"] } } },
    "r1": { "kind": "router", "interfaces": { "eth1": { "addresses": ["10.0.1.1/24"] } } },
    "h2": {}
  },
  "links": [
    { "endpoints": ["h1:eth0", "r1:eth1"] },
    { "endpoints": ["r1:eth2", "h2:eth0"], "impair": { "delay_ms": 10, "loss_pct": 1.5 } }
  ],
  "checks": [ { "from": "h1", "to": "r1" }, { "from": "h1", "to": "192.0.2.1", "expect": "unreachable" } ]
})";

events::InterfaceState up(std::string qdisc = "noqueue") {
    events::InterfaceState s;
    s.present = s.admin_up = s.carrier = true;
    s.operstate = 6;  // IF_OPER_UP
    s.root_qdisc = std::move(qdisc);
    return s;
}

struct Live {
    std::map<std::pair<std::size_t, std::string>, events::InterfaceState> ifaces;
    std::set<std::size_t> missing;
    Json view(const topology::Topology& topo, const Json& status = Json::object(), const Json& results = nullptr) {
        return make_view(
            topo, Json::parse(kLab), status, results, false, [&](std::size_t n) { return !missing.count(n); },
            [&](std::size_t n, const std::string& i) {
                auto it = ifaces.find({n, i});
                return it == ifaces.end() ? events::InterfaceState{} : it->second;
            });
    }
};

TEST(ServeView, LinkStatesFollowTheInterfaces) {
    auto topo = topology::load_text(kLab, "v.json");
    Live live;
    live.ifaces[{0, "eth0"}] = up();
    live.ifaces[{1, "eth1"}] = up();
    live.ifaces[{1, "eth2"}] = up("netem");
    live.ifaces[{2, "eth0"}] = up("netem");
    Json v = live.view(topo);
    EXPECT_EQ(v["links"][0]["endpoints"], "h1:eth0 r1:eth1");
    EXPECT_EQ(v["links"][0]["id"], "link-0");
    EXPECT_EQ(v["links"][0]["state"], "up");
    EXPECT_FALSE(v["links"][0].contains("impair"));
    EXPECT_EQ(v["links"][1]["state"], "impaired");
    EXPECT_EQ(v["links"][1]["impair"], "delay 10 ms, loss 1.5%");  // the file's, as in force

    // One end set down: the link is down, and says which end and why.
    live.ifaces[{0, "eth0"}].admin_up = false;
    live.ifaces[{1, "eth1"}].operstate = 2;  // IF_OPER_DOWN
    live.ifaces[{1, "eth1"}].carrier = false;
    v = live.view(topo);
    EXPECT_EQ(v["links"][0]["state"], "down");
    EXPECT_EQ(v["links"][0]["ends"][0]["state"], "admin down");
    EXPECT_EQ(v["links"][0]["ends"][1]["state"], "no carrier");

    // An impairment status reports (a runtime `impair`) wins over the file's.
    Json status{{"links",
                 Json::array({Json::array({"h1:eth0", "r1:eth1"}),
                              Json{{"endpoints", {"r1:eth2", "h2:eth0"}}, {"impair", {{"rate_mbit", 5}}}}})}};
    v = live.view(topo, status);
    EXPECT_EQ(v["links"][1]["impair"], "rate 5 Mbit/s");

    // The qdisc removed: up again.
    live.ifaces[{1, "eth2"}].root_qdisc = "noqueue";
    live.ifaces[{2, "eth0"}].root_qdisc = "";
    EXPECT_EQ(live.view(topo)["links"][1]["state"], "up");
}

TEST(ServeView, NodeStates) {
    auto topo = topology::load_text(kLab, "v.json");
    Live live;
    live.missing.insert(2);
    Json status{{"nodes",
                 Json::array({Json{{"name", "h1"}, {"present", true}},
                              Json{{"name", "r1"}, {"present", true}, {"state", "stopped"}}})}};
    Json v = live.view(topo, status);
    EXPECT_EQ(v["nodes"][0]["state"], "up");
    EXPECT_EQ(v["nodes"][1]["state"], "stopped");
    EXPECT_EQ(v["nodes"][2]["state"], "missing");
    EXPECT_EQ(v["links"][1]["state"], "down");  // an end in a missing node
    EXPECT_EQ(v["links"][1]["ends"][1]["state"], "missing");
}

TEST(ServeView, ChecksAsWrittenWithTheirLastResults) {
    auto topo = topology::load_text(kLab, "v.json");
    Live live;
    Json v = live.view(topo);
    ASSERT_EQ(v["checks"].size(), 2u);
    EXPECT_EQ(v["checks"][0]["label"], "h1 -> r1");
    EXPECT_EQ(v["checks"][1]["expect"], "unreachable");
    EXPECT_TRUE(v["checks"][0]["result"].is_null());
    v = live.view(topo, Json::object(), Json::array({Json{{"ok", true}}, Json{{"ok", false}}}));
    EXPECT_EQ(v["checks"][1]["result"]["ok"], false);
}

TEST(ServeView, ImpairText) {
    EXPECT_EQ(impair_text(Json{{"rate_mbit", 100}, {"jitter_ms", 2}, {"delay_ms", 10}}),
              "delay 10 ms, jitter 2 ms, rate 100 Mbit/s");
    EXPECT_EQ(impair_text(Json{{"duplicate_pct", 0.5}, {"reorder_pct", 25}}), "duplicate 0.5%, reorder 25%");
    EXPECT_EQ(impair_text(Json::object()), "");
    EXPECT_EQ(impair_text(Json("netem")), "");
}

TEST(GraphIds, ElementIdsOnlyWhenAsked) {
    auto topo = topology::load_text(kLab, "v.json");
    std::string plain = graph::to_dot(topo);
    EXPECT_EQ(plain.find("id=\""), std::string::npos);
    std::string ids = graph::to_dot(topo, graph::DotOptions{true});
    EXPECT_NE(ids.find("id=\"node-h1\""), std::string::npos);
    EXPECT_NE(ids.find("id=\"node-r1\""), std::string::npos);
    EXPECT_NE(ids.find("id=\"link-0\""), std::string::npos);
    EXPECT_NE(ids.find("id=\"link-1\""), std::string::npos);
}

}  // namespace
}  // namespace labctl::serve
