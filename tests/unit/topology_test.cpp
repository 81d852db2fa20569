// Every rule of docs/topology.md: a passing case and a failing case with its exact JSON pointer.

#include <functional>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "base/error.hpp"
#include "topology/load.hpp"
#include "expect.hpp"

namespace labctl::topology {
namespace {

using Json = nlohmann::ordered_json;
using ::testing::HasSubstr;

// A small valid lab every test starts from.
Json base() {
    return Json::parse(R"({
      "name": "t",
      "nodes": {
        "h1": { "interfaces": { "eth0": { "addresses": ["10.0.1.10/24", "fd00:1::10/64"] } },
                "routes": [ { "to": "default", "via": "10.0.1.1" } ] },
        "r1": { "kind": "router",
                "interfaces": { "lo": { "addresses": ["192.0.2.1/32"] },
                                "eth1": { "addresses": ["10.0.1.1/24", "fd00:1::1/64"] },
                                "eth2": { "addresses": ["10.0.12.1/30"] } } },
        "r2": { "kind": "router", "interfaces": { "eth2": { "addresses": ["10.0.12.2/30"] } } },
        "sw1": { "kind": "switch", "interfaces": { "vm1": { "type": "tap", "owner": 1000 } } }
      },
      "links": [
        { "endpoints": ["h1:eth0", "r1:eth1"] },
        { "endpoints": ["r1:eth2", "r2:eth2"], "mtu": 9000,
          "impair": { "delay_ms": 10, "jitter_ms": 2, "loss_pct": 1.5, "rate_mbit": 100 } },
        { "endpoints": ["sw1:p1", "r2:eth3"] }
      ],
      "checks": [ { "from": "h1", "to": "r2" } ]
    })");
}

Topology load(const Json& doc) { return load_text(doc.dump(), "t.json"); }

std::vector<TopologyProblem> problems(const Json& doc) {
    try {
        load(doc);
    } catch (const TopologyError& e) {
        return e.problems();
    }
    return {};
}

// Applies `change` to the base lab and expects exactly one problem, at `pointer`.
void expect_problem(const std::function<void(Json&)>& change, const std::string& pointer,
                    const std::string& words = "") {
    Json doc = base();
    change(doc);
    auto found = problems(doc);
    ASSERT_EQ(found.size(), 1u) << [&] {
        std::string all;
        for (const auto& p : found) all += p.pointer + ": " + p.message + "\n";
        return all;
    }();
    EXPECT_EQ(found[0].pointer, pointer);
    EXPECT_THAT(found[0].message, HasSubstr(words));
}

void expect_valid(const std::function<void(Json&)>& change) {
    Json doc = base();
    change(doc);
    auto found = problems(doc);
    std::string all;
    for (const auto& p : found) all += p.pointer + ": " + p.message + "\n";
    EXPECT_TRUE(found.empty()) << all;
}

TEST(TopologyValidate, BaseIsValidAndResolved) {
    Topology t = load(base());
    EXPECT_EQ(t.name, "t");
    ASSERT_EQ(t.nodes.size(), 4u);
    EXPECT_EQ(t.nodes[0].netns, "t-h1");
    EXPECT_EQ(t.nodes[1].kind, NodeKind::router);
    ASSERT_EQ(t.links.size(), 3u);
    EXPECT_EQ(t.end_name(t.links[1].ends[0]), "r1:eth2");
    EXPECT_EQ(*t.interface(t.links[1].ends[1]).mtu, 9000u);
    EXPECT_DOUBLE_EQ(*t.links[1].impair.delay_ms, 10);
    // Undeclared link ends exist and are veths; a switch's ports belong to br0.
    const Node& sw = t.nodes[3];
    auto p1 = sw.find_interface("p1");
    ASSERT_TRUE(p1);
    EXPECT_EQ(sw.interfaces[*p1].type, InterfaceType::veth);
    EXPECT_EQ(sw.interfaces[*sw.interfaces[*p1].master].name, "br0");
    EXPECT_EQ(sw.interfaces[*sw.find_interface("vm1")].type, InterfaceType::tap);
    EXPECT_EQ(*sw.interfaces[*sw.find_interface("vm1")].owner, 1000u);
    // lo always exists.
    EXPECT_TRUE(t.nodes[0].find_interface("lo"));
    ASSERT_EQ(t.checks.size(), 1u);
    EXPECT_EQ(t.checks[0].to.to_string(), "10.0.12.2");
}

TEST(TopologyValidate, CheckTargetIsFirstAddressInFileOrder) {
    Topology t = load(base());
    EXPECT_EQ(t.nodes[1].first_address(AF_INET)->to_string(), "192.0.2.1");  // lo written first
    Json doc = base();
    doc["checks"] = Json::parse(R"([{"from": "h1", "to": "r1"}, {"from": "h1", "to": "r1", "family": 6},
                                    {"from": "h1", "to": "r1:eth2"}, {"from": "h1:eth0", "to": "fd00:1::1"}])");
    t = load(doc);
    EXPECT_EQ(t.checks[0].to.to_string(), "192.0.2.1");
    EXPECT_EQ(t.checks[1].to.to_string(), "fd00:1::1");
    EXPECT_EQ(t.checks[2].to.to_string(), "10.0.12.1");
    EXPECT_EQ(t.checks[3].to.to_string(), "fd00:1::1");
    EXPECT_EQ(t.nodes[0].interfaces[*t.checks[3].from_interface].name, "eth0");
    EXPECT_EQ(t.checks[0].count, 3);
    EXPECT_EQ(t.checks[0].timeout_ms, 1000);
}

TEST(TopologyValidate, CheckFallsBackToIPv6WhenNoIPv4) {
    expect_valid([](Json& d) {
        d["nodes"]["h2"] = Json::parse(R"({"interfaces": {"eth0": {"addresses": ["fd00:9::2/64"]}}})");
        d["links"].push_back(Json::parse(R"({"endpoints": ["h2:eth0", "r2:eth9"]})"));
        d["checks"].push_back(Json::parse(R"({"from": "h1", "to": "h2"})"));
    });
    Json d = base();
    d["nodes"]["h2"] = Json::parse(R"({"interfaces": {"eth0": {"addresses": ["fd00:9::2/64"]}}})");
    d["links"].push_back(Json::parse(R"({"endpoints": ["h2:eth0", "r2:eth9"]})"));
    d["checks"].push_back(Json::parse(R"({"from": "h1", "to": "h2"})"));
    EXPECT_EQ(load(d).checks.back().to.to_string(), "fd00:9::2");
}

TEST(TopologyValidate, LabName) {
    expect_valid([](Json& d) { d["name"] = "a-0123456789abcd"; });
    expect_problem([](Json& d) { d["name"] = "Triangle"; }, "/name", "does not match");
    expect_problem([](Json& d) { d["name"] = "a0123456789abcdef"; }, "/name", "does not match");
    expect_problem([](Json& d) { d.erase("name"); }, "", "missing required field \"name\"");
}

TEST(TopologyValidate, NodeName) {
    expect_valid([](Json& d) { d["nodes"]["n_1-x"] = Json::object(); });
    expect_problem([](Json& d) { d["nodes"]["1n"] = Json::object(); }, "/nodes/1n", "node name");
    expect_problem([](Json& d) { d["nodes"]["a2345678901234567"] = Json::object(); }, "/nodes/a2345678901234567",
                   "node name");
}

TEST(TopologyValidate, UnknownFieldsAreErrors) {
    expect_problem([](Json& d) { d["extra"] = 1; }, "/extra", "unknown field");
    expect_problem([](Json& d) { d["nodes"]["h1"]["colour"] = "red"; }, "/nodes/h1/colour", "unknown field");
    expect_problem([](Json& d) { d["nodes"]["h1"]["interfaces"]["eth0"]["ip"] = "x"; }, "/nodes/h1/interfaces/eth0/ip",
                   "unknown field");
    expect_problem([](Json& d) { d["links"][0]["speed"] = 1; }, "/links/0/speed", "unknown field");
    expect_problem([](Json& d) { d["checks"][0]["via"] = 1; }, "/checks/0/via", "unknown field");
}

TEST(TopologyValidate, NodeKind) {
    expect_problem([](Json& d) { d["nodes"]["h1"]["kind"] = "hub"; }, "/nodes/h1/kind", "is not one of");
}

TEST(TopologyValidate, InterfaceNames) {
    expect_valid([](Json& d) { d["nodes"]["h1"]["interfaces"]["d-1234567890123"] = Json{{"type", "dummy"}}; });
    expect_problem(
        [](Json& d) {
            d["nodes"]["h1"]["interfaces"]["d-12345678901234"] = Json{{"type", "dummy"}};
        },
        "/nodes/h1/interfaces/d-12345678901234", "IFNAMSIZ");
    expect_problem(
        [](Json& d) {
            d["nodes"]["h1"]["interfaces"]["a/b"] = Json{{"type", "dummy"}};
        },
        "/nodes/h1/interfaces/a~1b", "'/'");
    expect_problem(
        [](Json& d) {
            d["nodes"]["h1"]["interfaces"]["a b"] = Json{{"type", "dummy"}};
        },
        "/nodes/h1/interfaces/a b", "space");
    expect_problem(
        [](Json& d) {
            d["nodes"]["h1"]["interfaces"][".."] = Json{{"type", "dummy"}};
        },
        "/nodes/h1/interfaces/..", "not allowed");
    expect_problem(
        [](Json& d) {
            d["nodes"]["h1"]["interfaces"]["eth%d"] = Json{{"type", "dummy"}};
        },
        "/nodes/h1/interfaces/eth%d", "%d");
    // Multi-byte names are measured in bytes.
    expect_problem(
        [](Json& d) {
            d["nodes"]["h1"]["interfaces"]["\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9"] =
                Json{{"type", "dummy"}};
        },
        "/nodes/h1/interfaces/\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9", "bytes");
}

TEST(TopologyValidate, Addresses) {
    expect_problem([](Json& d) { d["nodes"]["h1"]["interfaces"]["eth0"]["addresses"][0] = "10.0.1.10"; },
                   "/nodes/h1/interfaces/eth0/addresses/0", "prefix length");
    expect_problem([](Json& d) { d["nodes"]["h1"]["interfaces"]["eth0"]["addresses"][0] = "10.0.1.10/33"; },
                   "/nodes/h1/interfaces/eth0/addresses/0", "prefix length");
    expect_problem([](Json& d) { d["nodes"]["h1"]["interfaces"]["eth0"]["addresses"][1] = "fd00::g/64"; },
                   "/nodes/h1/interfaces/eth0/addresses/1", "prefix length");
    expect_problem([](Json& d) { d["nodes"]["h1"]["interfaces"]["eth0"]["addresses"][0] = "10.0.1.0/24"; },
                   "/nodes/h1/interfaces/eth0/addresses/0", "network address");
    expect_problem([](Json& d) { d["nodes"]["h1"]["interfaces"]["eth0"]["addresses"][0] = "10.0.1.255/24"; },
                   "/nodes/h1/interfaces/eth0/addresses/0", "broadcast");
    expect_problem([](Json& d) { d["nodes"]["h1"]["interfaces"]["eth0"]["addresses"][1] = "10.0.1.10/24"; },
                   "/nodes/h1/interfaces/eth0/addresses/1",
                   "is already the address at /nodes/h1/interfaces/eth0/addresses/0");
    expect_valid([](Json& d) { d["nodes"]["r2"]["interfaces"]["lo"] = Json{{"addresses", {"10.0.0.0/31"}}}; });
}

TEST(TopologyValidate, MacAndMtu) {
    expect_valid([](Json& d) { d["nodes"]["h1"]["interfaces"]["eth0"]["mac"] = "02:00:00:00:01:10"; });
    expect_problem([](Json& d) { d["nodes"]["h1"]["interfaces"]["eth0"]["mac"] = "02:00:00:00:01"; },
                   "/nodes/h1/interfaces/eth0/mac", "does not match");
    expect_problem([](Json& d) { d["nodes"]["h1"]["interfaces"]["eth0"]["mac"] = "01:00:5e:00:00:01"; },
                   "/nodes/h1/interfaces/eth0/mac", "multicast");
    expect_problem([](Json& d) { d["nodes"]["sw1"]["interfaces"]["vm1"]["mtu"] = 67; }, "/nodes/sw1/interfaces/vm1/mtu",
                   "out of bounds");
    expect_problem([](Json& d) { d["nodes"]["h1"]["interfaces"]["eth0"]["mtu"] = 1000; },
                   "/nodes/h1/interfaces/eth0/mtu", "1280");
    expect_problem([](Json& d) { d["nodes"]["r1"]["interfaces"]["eth2"]["mtu"] = 1500; }, "/links/1/mtu",
                   "r1:eth2 has mtu 1500");
}

TEST(TopologyValidate, TapTunOwnership) {
    expect_valid([](Json& d) { d["nodes"]["h1"]["interfaces"]["tun0"] = Json{{"type", "tun"}, {"group", 100}}; });
    expect_problem([](Json& d) { d["nodes"]["h1"]["interfaces"]["eth0"]["owner"] = 1000; },
                   "/nodes/h1/interfaces/eth0/owner", "tap and tun");
    expect_problem(
        [](Json& d) {
            d["nodes"]["sw1"]["interfaces"]["t0"] = Json{{"type", "tun"}};
        },
        "/nodes/sw1/interfaces/t0/type", "cannot be a switch port");
}

TEST(TopologyValidate, Vlans) {
    expect_valid([](Json& d) {
        d["nodes"]["r1"]["interfaces"]["eth1.10"] = Json{{"type", "vlan"}, {"parent", "eth1"}, {"id", 10}};
    });
    // A vlan on an undeclared link end resolves too.
    expect_valid([](Json& d) {
        d["nodes"]["r2"]["interfaces"]["eth3.20"] = Json{{"type", "vlan"}, {"parent", "eth3"}, {"id", 20}};
    });
    expect_problem(
        [](Json& d) {
            d["nodes"]["r1"]["interfaces"]["v"] = Json{{"type", "vlan"}, {"parent", "eth1"}, {"id", 4095}};
        },
        "/nodes/r1/interfaces/v/id", "out of bounds");
    expect_problem(
        [](Json& d) {
            d["nodes"]["r1"]["interfaces"]["v"] = Json{{"type", "vlan"}, {"parent", "eth9"}, {"id", 5}};
        },
        "/nodes/r1/interfaces/v/parent", "no interface \"eth9\"");
    expect_problem(
        [](Json& d) {
            d["nodes"]["r1"]["interfaces"]["v"] = Json{{"type", "vlan"}, {"id", 5}};
        },
        "/nodes/r1/interfaces/v", "needs a parent");
    expect_problem(
        [](Json& d) {
            d["nodes"]["r1"]["interfaces"]["v1"] = Json{{"type", "vlan"}, {"parent", "eth1"}, {"id", 5}};
            d["nodes"]["r1"]["interfaces"]["v2"] = Json{{"type", "vlan"}, {"parent", "eth1"}, {"id", 5}};
        },
        "/nodes/r1/interfaces/v2/id", "already v1");
    expect_problem([](Json& d) { d["nodes"]["r1"]["interfaces"]["eth1"]["id"] = 5; }, "/nodes/r1/interfaces/eth1/id",
                   "vlan interfaces only");
}

TEST(TopologyValidate, VlanFilteringSwitch) {
    expect_valid([](Json& d) {
        d["nodes"]["sw1"]["vlan_filtering"] = true;
        d["nodes"]["sw1"]["interfaces"]["p1"] = Json{{"pvid", 10}, {"tagged", {20, 30}}};
    });
    expect_problem(
        [](Json& d) {
            d["nodes"]["sw1"]["interfaces"]["p1"] = Json{{"pvid", 10}};
        },
        "/nodes/sw1/interfaces/p1/pvid", "vlan_filtering");
    expect_problem([](Json& d) { d["nodes"]["h1"]["vlan_filtering"] = true; }, "/nodes/h1/vlan_filtering",
                   "only a switch");
    expect_problem(
        [](Json& d) {
            d["nodes"]["sw1"]["vlan_filtering"] = true;
            d["nodes"]["sw1"]["interfaces"]["p1"] = Json{{"pvid", 10}, {"tagged", {10}}};
        },
        "/nodes/sw1/interfaces/p1/tagged/0", "pvid");
    expect_problem(
        [](Json& d) {
            d["nodes"]["sw1"]["interfaces"]["p1"] = Json{{"addresses", {"10.9.0.1/24"}}};
        },
        "/nodes/sw1/interfaces/p1/addresses", "switch port");
    expect_valid([](Json& d) { d["nodes"]["sw1"]["interfaces"]["br0"] = Json{{"addresses", {"10.9.0.1/24"}}}; });
}

TEST(TopologyValidate, SwitchPortLimit) {
    auto with_ports = [](std::size_t n) {
        return [n](Json& d) {
            for (std::size_t i = 0; i < n; ++i)
                d["nodes"]["sw1"]["interfaces"]["d" + std::to_string(i)] = Json{{"type", "dummy"}};
        };
    };
    expect_valid(with_ports(1023 - 2));  // vm1 and p1 are ports already
    expect_problem(with_ports(1023 - 1), "/nodes/sw1", "at most 1023");
}

TEST(TopologyValidate, HostBridge) {
    expect_valid([](Json& d) {
        d["nodes"]["h1"]["interfaces"]["d0"] = Json{{"type", "dummy"}};
        d["nodes"]["h1"]["interfaces"]["br9"] = Json{{"type", "bridge"}, {"ports", {"eth0", "d0"}}};
    });
    expect_problem(
        [](Json& d) {
            d["nodes"]["h1"]["interfaces"]["br9"] = Json{{"type", "bridge"}, {"ports", {"lo"}}};
        },
        "/nodes/h1/interfaces/br9/ports/0", "cannot be a bridge port");
    expect_problem(
        [](Json& d) {
            d["nodes"]["h1"]["interfaces"]["br9"] = Json{{"type", "bridge"}, {"ports", {"nope"}}};
        },
        "/nodes/h1/interfaces/br9/ports/0", "no interface");
    expect_problem(
        [](Json& d) {
            d["nodes"]["h1"]["interfaces"]["b1"] = Json{{"type", "bridge"}, {"ports", {"eth0"}}};
            d["nodes"]["h1"]["interfaces"]["b2"] = Json{{"type", "bridge"}, {"ports", {"eth0"}}};
        },
        "/nodes/h1/interfaces/b2/ports/0", "already a port of b1");
}

TEST(TopologyValidate, Links) {
    auto add = [](Json& d, const char* a, const char* b) { d["links"].push_back(Json{{"endpoints", {a, b}}}); };
    expect_problem([&](Json& d) { add(d, "h1:x1", "r9:eth1"); }, "/links/3/endpoints/1", "no node \"r9\"");
    expect_problem([&](Json& d) { add(d, "h1:x1", "h1:x2"); }, "/links/3/endpoints", "two different nodes");
    expect_problem(
        [](Json& d) {
            d["links"].push_back(Json{{"endpoints", {"h1:eth0", "r2:eth5"}}});
        },
        "/links/3/endpoints/0", "already an end of links/0");
    expect_problem([](Json& d) { d["links"][2]["endpoints"][0] = "sw1:vm1"; }, "/links/2/endpoints/0", "tap interface");
    expect_problem(
        [](Json& d) {
            d["links"].push_back(Json{{"endpoints", {"h1:x1"}}});
        },
        "/links/3/endpoints", "minItems");
    expect_problem([&](Json& d) { add(d, "h1", "r1:x1"); }, "/links/3/endpoints/0", "does not match");
    expect_problem([](Json& d) { d["links"][2]["endpoints"][0] = "sw1:br0"; }, "/links/2/endpoints/0", "bridge");
    expect_problem([](Json& d) { d["nodes"]["h1"]["interfaces"]["eth5"] = Json::object(); },
                   "/nodes/h1/interfaces/eth5", "in no link");
}

TEST(TopologyValidate, Impairments) {
    expect_problem([](Json& d) { d["links"][1]["impair"].erase("delay_ms"); }, "/links/1/impair/jitter_ms", "delay");
    expect_problem([](Json& d) { d["links"][1]["impair"]["loss_pct"] = 101; }, "/links/1/impair/loss_pct",
                   "out of bounds");
    expect_problem([](Json& d) { d["links"][1]["impair"]["rate_mbit"] = 0; }, "/links/1/impair/rate_mbit",
                   "out of bounds");
    expect_problem(
        [](Json& d) {
            d["links"][0]["impair"] = {{"reorder_pct", 5}};
        },
        "/links/0/impair/reorder_pct", "delay");
}

TEST(TopologyValidate, Routes) {
    expect_valid([](Json& d) {
        d["nodes"]["h1"]["routes"].push_back(Json{{"to", "default"}, {"via", "fd00:1::1"}});
        d["nodes"]["h1"]["routes"].push_back(Json{{"to", "10.9.0.0/16"}, {"dev", "eth0"}, {"metric", 5}});
    });
    expect_problem([](Json& d) { d["nodes"]["h1"]["routes"][0]["to"] = "10.9.0.1/16"; }, "/nodes/h1/routes/0/to",
                   "host bits");
    expect_problem([](Json& d) { d["nodes"]["h1"]["routes"][0]["to"] = "fd00:9::/64"; }, "/nodes/h1/routes/0/via",
                   "family");
    expect_problem([](Json& d) { d["nodes"]["h1"]["routes"][0]["via"] = "gateway"; }, "/nodes/h1/routes/0/via",
                   "not an IPv4 or IPv6 address");
    expect_problem([](Json& d) { d["nodes"]["h1"]["routes"][0].erase("via"); }, "/nodes/h1/routes/0", "via, dev");
    expect_problem([](Json& d) { d["nodes"]["h1"]["routes"][0]["dev"] = "eth7"; }, "/nodes/h1/routes/0/dev",
                   "no interface \"eth7\"");
    expect_problem(
        [](Json& d) {
            d["nodes"]["h1"]["routes"].push_back(Json{{"to", "default"}, {"via", "10.0.1.2"}});
        },
        "/nodes/h1/routes/1", "same destination");
}

TEST(TopologyValidate, Sysctls) {
    expect_valid([](Json& d) { d["nodes"]["h1"]["sysctls"] = {{"net.ipv4.conf.eth0.rp_filter", "0"}}; });
    expect_problem(
        [](Json& d) {
            d["nodes"]["h1"]["sysctls"] = {{"kernel.panic", "1"}};
        },
        "/nodes/h1/sysctls/kernel.panic", "under net.");
    expect_problem(
        [](Json& d) {
            d["nodes"]["h1"]["sysctls"] = {{"net.ipv4.ip_forward", 1}};
        },
        "/nodes/h1/sysctls/net.ipv4.ip_forward", "expected a string");
}

TEST(TopologyValidate, ExecAndDaemons) {
    Json d = base();
    d["nodes"]["h1"]["exec"] = Json::parse(R"([["sysctl", "-w", "x=1"], "echo $(id); ls"])");
    d["nodes"]["h1"]["daemons"] = Json::parse(R"([["sleep", "100"]])");
    Topology t = load(d);
    ASSERT_EQ(t.nodes[0].exec.size(), 2u);
    EXPECT_EQ(t.nodes[0].exec[0].argv, (std::vector<std::string>{"sysctl", "-w", "x=1"}));
    EXPECT_EQ(t.nodes[0].exec[1].argv, (std::vector<std::string>{"/bin/sh", "-c", "echo $(id); ls"}));
    EXPECT_EQ(t.nodes[0].daemons[0].argv[0], "sleep");
    expect_problem([](Json& d) { d["nodes"]["h1"]["exec"] = Json::parse("[[]]"); }, "/nodes/h1/exec/0", "");
    expect_problem([](Json& d) { d["nodes"]["h1"]["exec"] = Json::parse("[3]"); }, "/nodes/h1/exec/0",
                   "expected an array or a string");
    expect_problem([](Json& d) { d["nodes"]["h1"]["daemons"] = Json::parse(R"(["sleep 1"])"); }, "/nodes/h1/daemons/0",
                   "expected an array");
}

TEST(TopologyValidate, Checks) {
    expect_problem([](Json& d) { d["checks"][0]["from"] = "h9"; }, "/checks/0/from", "no node \"h9\"");
    expect_problem([](Json& d) { d["checks"][0]["from"] = "h1:eth9"; }, "/checks/0/from", "no interface");
    expect_problem([](Json& d) { d["checks"][0]["to"] = "nowhere"; }, "/checks/0/to", "neither");
    expect_problem([](Json& d) { d["checks"][0]["to"] = "sw1"; }, "/checks/0/to", "no address");
    expect_problem(
        [](Json& d) {
            d["checks"][0]["to"] = "r2";
            d["checks"][0]["family"] = 6;
        },
        "/checks/0/to", "no IPv6 address");
    expect_problem(
        [](Json& d) {
            d["checks"][0]["to"] = "10.0.1.1";
            d["checks"][0]["family"] = 6;
        },
        "/checks/0/family", "does not match");
    expect_problem([](Json& d) { d["checks"][0]["expect"] = "maybe"; }, "/checks/0/expect", "is not one of");
    expect_problem([](Json& d) { d["checks"][0]["count"] = 0; }, "/checks/0/count", "out of bounds");
    expect_valid([](Json& d) {
        d["checks"].push_back(Json{
            {"from", "h1:eth0"}, {"to", "203.0.113.9"}, {"expect", "unreachable"}, {"count", 1}, {"timeout_ms", 200}});
    });
}

TEST(TopologyValidate, AllErrorsAtOnce) {
    Json d = base();
    d["name"] = "Bad";
    d["links"][0]["endpoints"][1] = "r9:x";
    d["checks"][0]["to"] = "nowhere";
    auto found = problems(d);
    std::vector<std::string> pointers;
    for (const auto& p : found) pointers.push_back(p.pointer);
    EXPECT_THAT(pointers, ::testing::IsSupersetOf({"/name", "/links/0/endpoints/1", "/checks/0/to"}));
}

TEST(TopologyLoad, SyntaxErrorsHaveLineAndColumn) {
    auto e = labctl::testing::expect_error<TopologyError>(
        [] { load_text("{\n  \"name\": \"x\",\n  \"nodes\": {,}\n}", "s.json"); });
    ASSERT_TRUE(e);
    ASSERT_EQ(e->problems().size(), 1u);
    EXPECT_THAT(e->problems()[0].message, HasSubstr("line 3, column 13"));
}

TEST(TopologyLoad, HostileInputsAreCleanErrors) {
    std::string deep(100000, '[');
    deep += std::string(100000, ']');
    EXPECT_THROW(load_text(deep, "deep.json"), TopologyError);
    EXPECT_THROW(load_text(std::string("\x7f\x45\x4c\x46\0\0", 6), "bin"), TopologyError);
    EXPECT_THROW(load_text(std::string(kMaxFileBytes + 1, ' '), "big"), TopologyError);
    EXPECT_THROW(load_file("/"), TopologyError);
    EXPECT_THROW(load_file("/nonexistent/topo.json"), TopologyError);
    EXPECT_THROW(load_text("[]", "array"), TopologyError);
    EXPECT_THROW(load_text("\"\\ud800\"", "bad-utf16"), TopologyError);
}

}  // namespace
}  // namespace labctl::topology
