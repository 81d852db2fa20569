// Validation rules that keep a check from passing falsely or `up` from failing late:
// duplicate addresses, checks aimed at their own node, gateways off every link.

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "base/error.hpp"
#include "topology/load.hpp"

namespace labctl::topology {
// Named, not anonymous: the sanitizer build compiles the tests as one unity file, where
// topology_test.cpp's anonymous base() and problems() would collide with these.
namespace validate_rules {

using Json = nlohmann::ordered_json;
using ::testing::HasSubstr;

// h1 -- r1 -- h2, each LAN its own /24, dual-stack on the first one.
Json base() {
    return Json::parse(R"({
      "name": "v",
      "nodes": {
        "h1": { "interfaces": { "eth0": { "addresses": ["10.0.1.10/24", "fd00:1::10/64"] } },
                "routes": [ { "to": "default", "via": "10.0.1.1" }, { "to": "default", "via": "fd00:1::1" } ] },
        "r1": { "kind": "router",
                "interfaces": { "eth1": { "addresses": ["10.0.1.1/24", "fd00:1::1/64"] },
                                "eth2": { "addresses": ["10.0.2.1/24"] } } },
        "h2": { "interfaces": { "eth0": { "addresses": ["10.0.2.10/24"] } },
                "routes": [ { "to": "default", "via": "10.0.2.1" } ] }
      },
      "links": [ { "endpoints": ["h1:eth0", "r1:eth1"] }, { "endpoints": ["h2:eth0", "r1:eth2"] } ],
      "checks": [ { "from": "h1", "to": "h2" } ]
    })");
}

std::vector<TopologyProblem> problems(const Json& doc) {
    try {
        load_text(doc.dump(), "v.json");
    } catch (const TopologyError& e) {
        return e.problems();
    }
    return {};
}

std::string all(const std::vector<TopologyProblem>& found) {
    std::string out;
    for (const auto& p : found) out += p.pointer + ": " + p.message + "\n";
    return out;
}

TEST(Validate, BaseIsValid) { EXPECT_TRUE(problems(base()).empty()) << all(problems(base())); }

TEST(Validate, AddressOnTwoNodesNamesBothPointers) {
    Json d = base();
    d["nodes"]["h2"]["interfaces"]["eth0"]["addresses"][0] = "10.0.1.10/24";
    d["nodes"]["h2"]["routes"] = Json::array();
    d["checks"] = Json::array();
    auto found = problems(d);
    ASSERT_EQ(found.size(), 1u) << all(found);
    EXPECT_EQ(found[0].pointer, "/nodes/h2/interfaces/eth0/addresses/0");
    EXPECT_THAT(found[0].message,
                HasSubstr("10.0.1.10 is already the address at /nodes/h1/interfaces/eth0/addresses/0"));
}

TEST(Validate, AddressTwiceInOneNode) {
    Json d = base();
    d["nodes"]["r1"]["interfaces"]["eth2"]["addresses"].push_back("fd00:1::1/64");
    auto found = problems(d);
    ASSERT_EQ(found.size(), 1u) << all(found);
    EXPECT_EQ(found[0].pointer, "/nodes/r1/interfaces/eth2/addresses/1");
    EXPECT_THAT(found[0].message, HasSubstr("/nodes/r1/interfaces/eth1/addresses/1"));
}

TEST(Validate, LinkLocalAddressesCollideOnlyOnOneLink) {
    Json d = base();
    // fe80::1 on each of r1's links, and on h2 (another link): fine, as on real routers.
    d["nodes"]["r1"]["interfaces"]["eth1"]["addresses"].push_back("fe80::1/64");
    d["nodes"]["r1"]["interfaces"]["eth2"]["addresses"].push_back("fe80::1/64");
    d["nodes"]["h2"]["interfaces"]["eth0"]["addresses"].push_back("fe80::2/64");
    EXPECT_TRUE(problems(d).empty()) << all(problems(d));
    // h1's fe80::1 is on r1:eth1's link.
    d["nodes"]["h1"]["interfaces"]["eth0"]["addresses"].push_back("fe80::1/64");
    auto found = problems(d);
    ASSERT_EQ(found.size(), 1u) << all(found);
    EXPECT_EQ(found[0].pointer, "/nodes/r1/interfaces/eth1/addresses/2");
    EXPECT_THAT(found[0].message, HasSubstr("/nodes/h1/interfaces/eth0/addresses/2 on the same link"));
}

TEST(Validate, SharedAddressesOnPurpose) {
    Json d = base();
    // The same /32 on two routers' lo (anycast): both must say so.
    d["nodes"]["r1"]["interfaces"]["lo"] = {{"addresses", {"192.0.2.1/32"}}, {"shared_addresses", true}};
    d["nodes"]["h2"]["interfaces"]["lo"] = {{"addresses", {"192.0.2.1/32"}}};
    auto found = problems(d);
    ASSERT_EQ(found.size(), 1u) << all(found);
    EXPECT_EQ(found[0].pointer, "/nodes/h2/interfaces/lo/addresses/0");
    EXPECT_THAT(found[0].message, HasSubstr("shared_addresses"));
    d["nodes"]["h2"]["interfaces"]["lo"]["shared_addresses"] = true;
    EXPECT_TRUE(problems(d).empty()) << all(problems(d));
}

TEST(Validate, CheckToItsOwnNodeIsAnError) {
    Json d = base();
    d["checks"].push_back({{"from", "h1"}, {"to", "10.0.1.10"}});
    d["checks"].push_back({{"from", "h1:eth0"}, {"to", "h1"}, {"family", 6}});
    auto found = problems(d);
    ASSERT_EQ(found.size(), 2u) << all(found);
    EXPECT_EQ(found[0].pointer, "/checks/1/to");
    EXPECT_THAT(found[0].message, HasSubstr("10.0.1.10 is h1's own address (eth0)"));
    EXPECT_EQ(found[1].pointer, "/checks/2/to");
    EXPECT_THAT(found[1].message, HasSubstr("fd00:1::10 is h1's own address"));
}

TEST(Validate, GatewayOutsideConnectedPrefixes) {
    Json d = base();
    d["nodes"]["h2"]["routes"][0]["via"] = "10.0.1.1";  // r1's address on the other LAN
    auto found = problems(d);
    ASSERT_EQ(found.size(), 1u) << all(found);
    EXPECT_EQ(found[0].pointer, "/nodes/h2/routes/0/via");
    EXPECT_THAT(found[0].message, HasSubstr("gateway 10.0.1.1 is in none of h2's connected prefixes"));
}

TEST(Validate, GatewayMustBeOnTheNamedDev) {
    Json d = base();
    d["nodes"]["r1"]["routes"] = Json::parse(R"([{ "to": "10.9.0.0/16", "via": "10.0.1.10", "dev": "eth2" }])");
    auto found = problems(d);
    ASSERT_EQ(found.size(), 1u) << all(found);
    EXPECT_EQ(found[0].pointer, "/nodes/r1/routes/0/via");
    EXPECT_THAT(found[0].message, HasSubstr("on eth2"));
    d["nodes"]["r1"]["routes"][0]["dev"] = "eth1";
    EXPECT_TRUE(problems(d).empty()) << all(problems(d));
}

TEST(Validate, GatewayReachedThroughADevRouteOrLinkLocal) {
    Json d = base();
    d["nodes"]["r1"]["routes"] = Json::parse(R"([
        { "to": "10.7.0.0/16", "dev": "eth2" },
        { "to": "10.8.0.0/16", "via": "10.7.0.1" },
        { "to": "fd00:8::/64", "via": "fe80::2", "dev": "eth2" }])");
    EXPECT_TRUE(problems(d).empty()) << all(problems(d));
    d["nodes"]["r1"]["routes"][2].erase("dev");
    auto found = problems(d);
    ASSERT_EQ(found.size(), 1u) << all(found);
    EXPECT_EQ(found[0].pointer, "/nodes/r1/routes/2/via");
    EXPECT_THAT(found[0].message, HasSubstr("link-local"));
}

TEST(Validate, CoursewareLabsStillValidate) {
    namespace fs = std::filesystem;
    int seen = 0;
    for (const auto& entry : fs::directory_iterator(fs::path(LABCTL_SOURCE_DIR) / "labs")) {
        fs::path topo = entry.path() / "topology.json";
        if (!fs::exists(topo)) continue;
        ++seen;
        try {
            load_file(topo.string());
        } catch (const TopologyError& e) {
            ADD_FAILURE() << e.what();
        }
    }
    EXPECT_GE(seen, 10);
}

}  // namespace validate_rules
}  // namespace labctl::topology
