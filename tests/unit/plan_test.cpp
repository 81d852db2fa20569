// The planner as a value: plan(desired, observed) without root, without the kernel.

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <nlohmann/json.hpp>
#include <set>

#include "plan/plan.hpp"
#include "topology/load.hpp"

namespace labctl::plan {
namespace {

using Json = nlohmann::ordered_json;
using ::testing::ElementsAre;
using ::testing::UnorderedElementsAre;
using topology::Topology;

Json base() {
    return Json::parse(R"({
      "name": "t",
      "nodes": {
        "h1": { "interfaces": { "eth0": { "addresses": ["10.0.1.10/24", "fd00:1::10/64"] } },
                "routes": [ { "to": "default", "via": "10.0.1.1" } ] },
        "r1": { "kind": "router",
                "interfaces": { "lo": { "addresses": ["192.0.2.1/32"] },
                                "eth1": { "addresses": ["10.0.1.1/24", "fd00:1::1/64"] },
                                "eth2": { "addresses": ["10.0.12.1/30"] } },
                "daemons": [["sleep", "1000"]] },
        "r2": { "kind": "router", "interfaces": { "eth2": { "addresses": ["10.0.12.2/30"] } },
                "routes": [ { "to": "10.0.1.0/24", "via": "10.0.12.1", "metric": 20 } ] },
        "sw1": { "kind": "switch", "interfaces": { "vm1": { "type": "tap", "owner": 1000 } } }
      },
      "links": [
        { "endpoints": ["h1:eth0", "r1:eth1"] },
        { "endpoints": ["r1:eth2", "r2:eth2"], "impair": { "delay_ms": 10 } },
        { "endpoints": ["sw1:p1", "r2:eth3"] }
      ]
    })");
}

Topology load(const Json& j) { return topology::load_text(j.dump(), "test.json"); }

// The lab as `up` of `t` leaves it: every namespace there, the kernel as the file says.
Observed as_built(const Topology& t) {
    Plan up = plan(t, Observed{});
    Observed o;
    o.built = t;
    for (std::size_t n = 0; n < t.nodes.size(); ++n) {
        const auto& node = t.nodes[n];
        ObservedNode on;
        on.name = node.name;
        on.present = true;
        on.dumped = true;
        for (std::size_t i = 0; i < node.interfaces.size(); ++i) {
            const auto& iface = node.interfaces[i];
            ObservedInterface oi;
            oi.name = iface.name;
            oi.ifindex = up.ifindex[n][i];
            oi.admin_up = iface.up;
            oi.mtu = iface.mtu.value_or(iface.type == topology::InterfaceType::loopback ? 65536 : 1500);
            if (iface.type == topology::InterfaceType::loopback) {
                oi.addresses.push_back(*IpPrefix::parse("127.0.0.1/8"));
                oi.addresses.push_back(*IpPrefix::parse("::1/128"));
            }
            for (const auto& a : iface.addresses) oi.addresses.push_back(a);
            on.interfaces.push_back(oi);
        }
        for (const auto& r : node.routes)
            on.routes.push_back({r.family, r.to, r.via, r.dev ? up.ifindex[n][*r.dev] : 1234,
                                 r.metric.value_or(r.family == AF_INET6 ? 1024u : 0u)});
        o.nodes.push_back(on);
    }
    return o;
}

std::vector<std::string> lines(const Plan& p) {
    std::vector<std::string> out;
    for (const auto& c : p.changes) out.push_back(c.line());
    return out;
}

std::size_t count(const Plan& p, OpKind k) {
    return static_cast<std::size_t>(
        std::count_if(p.ops.begin(), p.ops.end(), [&](const Op& op) { return op.kind == k; }));
}

const Op* find(const Plan& p, OpKind k) {
    for (const auto& op : p.ops)
        if (op.kind == k) return &op;
    return nullptr;
}

// Every plan: operations in stage order, each depending only on earlier ones.
void expect_well_formed(const Plan& p) {
    for (std::size_t i = 0; i < p.ops.size(); ++i) {
        if (i) {
            EXPECT_LE(stage_of(p.ops[i - 1].kind), stage_of(p.ops[i].kind)) << "op " << i;
        }
        for (auto d : p.ops[i].deps) EXPECT_LT(d, i) << "op " << i << " (" << to_string(p.ops[i].kind) << ")";
    }
}

TEST(Plan, UpFromNothingMakesEverythingInStageOrder) {
    Topology t = load(base());
    Plan p = plan(t, Observed{});
    expect_well_formed(p);
    EXPECT_EQ(count(p, OpKind::create_netns), 4u);
    EXPECT_EQ(count(p, OpKind::add_veth), 3u);
    EXPECT_EQ(count(p, OpKind::add_bridge), 1u);
    EXPECT_EQ(count(p, OpKind::replace_qdisc), 2u);  // both ends of the impaired link
    EXPECT_EQ(count(p, OpKind::add_address), 7u);
    EXPECT_EQ(count(p, OpKind::add_route), 2u);
    EXPECT_EQ(count(p, OpKind::start_daemons), 1u);
    EXPECT_EQ(count(p, OpKind::wait_links), 1u);
    EXPECT_EQ(count(p, OpKind::delete_netns) + count(p, OpKind::delete_address) + count(p, OpKind::stop_processes), 0u);
    EXPECT_THAT(lines(p),
                ElementsAre("+ node h1", "+ node r1", "+ node r2", "+ node sw1", "+ link h1:eth0 <-> r1:eth1",
                            "+ link r1:eth2 <-> r2:eth2", "+ link sw1:p1 <-> r2:eth3"));
    // Interface indexes: lo is 1, the rest unique across the lab (veth ends must differ).
    std::set<int> seen;
    for (std::size_t n = 0; n < t.nodes.size(); ++n)
        for (std::size_t i = 0; i < t.nodes[n].interfaces.size(); ++i) {
            int x = p.ifindex[n][i];
            if (t.nodes[n].interfaces[i].name == "lo") {
                EXPECT_EQ(x, 1);
            } else {
                EXPECT_GE(x, kFirstIfindex);
                EXPECT_TRUE(seen.insert(x).second) << x;
            }
        }
}

TEST(Plan, UpAddsRoutesAfterTheAddressesTheyNeed) {
    Topology t = load(base());
    Plan p = plan(t, Observed{});
    for (std::size_t i = 0; i < p.ops.size(); ++i) {
        if (p.ops[i].kind != OpKind::add_route) continue;
        bool after_address = false;
        for (auto d : p.ops[i].deps)
            after_address = after_address || (p.ops[d].kind == OpKind::add_address && p.ops[d].node == p.ops[i].node);
        EXPECT_TRUE(after_address) << p.describe(t, i);
    }
    // The impaired link's main end is made down; its qdisc comes before it goes up.
    for (std::size_t i = 0; i < p.ops.size(); ++i)
        if (p.ops[i].kind == OpKind::add_veth && p.ops[i].link == 1) {
            EXPECT_FALSE(*p.ops[i].up);
        }
}

TEST(Plan, IsAFunctionOfItsInputs) {
    Topology t = load(base());
    Observed o = as_built(t);
    Plan a = plan(t, o), b = plan(t, o);
    EXPECT_EQ(a.changes, b.changes);
    ASSERT_EQ(a.ops.size(), b.ops.size());
    for (std::size_t i = 0; i < a.ops.size(); ++i) EXPECT_EQ(a.describe(t, i), b.describe(t, i));
}

TEST(Plan, NothingToDoWhenTheLabIsTheFile) {
    Topology t = load(base());
    Plan p = plan(t, as_built(t));
    EXPECT_TRUE(p.empty()) << p.describe(t, 0);
    EXPECT_TRUE(p.changes.empty());
}

TEST(Plan, ChangedAddressIsChangedInPlace) {
    Topology t = load(base());
    Json j = base();
    j["nodes"]["h1"]["interfaces"]["eth0"]["addresses"] = {"10.0.1.12/24", "fd00:1::10/64"};
    Topology t2 = load(j);
    Observed o = as_built(t);
    Plan p = plan(t2, o);
    expect_well_formed(p);
    EXPECT_THAT(lines(p), ElementsAre("~ h1:eth0 addresses +10.0.1.12/24 -10.0.1.10/24"));
    EXPECT_EQ(count(p, OpKind::create_netns), 0u);
    EXPECT_EQ(count(p, OpKind::add_veth), 0u);
    const Op* del = find(p, OpKind::delete_address);
    const Op* add = find(p, OpKind::add_address);
    ASSERT_TRUE(del && add);
    EXPECT_EQ(del->ifindex, o.nodes[0].interfaces[0].ifindex);  // the same interface
    EXPECT_EQ(add->ifindex, del->ifindex);
    // The kernel drops the default route with the address its gateway was reached by.
    const Op* route = find(p, OpKind::add_route);
    ASSERT_TRUE(route);
    EXPECT_TRUE(route->may_exist);
}

TEST(Plan, AddingANodeTouchesOnlyItAndItsPeer) {
    Topology t = load(base());
    Json j = base();
    j["nodes"]["h4"] = Json::parse(R"({ "interfaces": { "eth0": { "addresses": ["10.0.9.4/24"] } } })");
    j["nodes"]["r1"]["interfaces"]["eth9"] = Json::parse(R"({ "addresses": ["10.0.9.1/24"] })");
    j["links"].push_back(Json::parse(R"({ "endpoints": ["h4:eth0", "r1:eth9"] })"));
    Topology t2 = load(j);
    Observed o = as_built(t);
    Plan p = plan(t2, o);
    expect_well_formed(p);
    EXPECT_THAT(lines(p), ElementsAre("+ node h4", "+ link h4:eth0 <-> r1:eth9"));
    EXPECT_EQ(count(p, OpKind::create_netns), 1u);
    EXPECT_EQ(find(p, OpKind::create_netns)->name, "t-h4");
    EXPECT_EQ(count(p, OpKind::add_veth), 1u);
    EXPECT_EQ(count(p, OpKind::start_daemons), 0u);  // r1's daemons keep running
    int max_seen = 0;
    for (const auto& on : o.nodes)
        for (const auto& i : on.interfaces) max_seen = std::max(max_seen, i.ifindex);
    const auto r1 = *t2.find_node("r1");
    EXPECT_GT(p.ifindex[r1][*t2.nodes[r1].find_interface("eth9")], max_seen);
    EXPECT_EQ(p.ifindex[r1][*t2.nodes[r1].find_interface("eth1")], o.find("r1")->find("eth1")->ifindex);
    for (const auto& op : p.ops)
        if (op.kind != OpKind::wait_links) {
            EXPECT_TRUE(op.node == *t2.find_node("h4") || op.node == r1) << to_string(op.kind);
        }
}

TEST(Plan, RemovingANodeRemovesItsNamespaceAndLinks) {
    Topology t = load(base());
    Json j = base();
    j["nodes"].erase("h1");
    j["nodes"]["r1"]["interfaces"].erase("eth1");
    j["links"].erase(0);
    Topology t2 = load(j);
    Plan p = plan(t2, as_built(t));
    expect_well_formed(p);
    EXPECT_THAT(lines(p), ElementsAre("- node h1", "- link h1:eth0 <-> r1:eth1"));
    ASSERT_EQ(count(p, OpKind::delete_netns), 1u);
    EXPECT_EQ(find(p, OpKind::delete_netns)->name, "t-h1");
    // Its processes go first (a process inside keeps a namespace alive).
    EXPECT_EQ(p.ops[0].kind, OpKind::stop_processes);
    // The namespace takes the veth with it, but the kernel frees it later: r1's end goes now.
    ASSERT_EQ(count(p, OpKind::delete_link), 1u);
    EXPECT_EQ(find(p, OpKind::delete_link)->name, "eth1");
}

TEST(Plan, RemovingALinkBetweenKeptNodesDeletesOneEnd) {
    Topology t = load(base());
    Json j = base();
    j["links"].erase(2);
    Topology t2 = load(j);
    Observed o = as_built(t);
    Plan p = plan(t2, o);
    EXPECT_THAT(lines(p), ElementsAre("- link sw1:p1 <-> r2:eth3"));
    ASSERT_EQ(count(p, OpKind::delete_link), 1u);
    const Op* del = find(p, OpKind::delete_link);
    EXPECT_EQ(del->ifindex, o.find(t.nodes[del->node].name)->find(del->name)->ifindex);
}

TEST(Plan, ImpairmentChangesInPlaceOnBothEnds) {
    Topology t = load(base());
    Json j = base();
    j["links"][1]["impair"]["delay_ms"] = 50;
    Plan p = plan(load(j), as_built(t));
    EXPECT_THAT(lines(p), ElementsAre("~ link r1:eth2 <-> r2:eth2 impair delay_ms 10 -> 50"));
    EXPECT_EQ(count(p, OpKind::replace_qdisc), 2u);
    EXPECT_EQ(count(p, OpKind::add_veth), 0u);
    j["links"][1].erase("impair");
    Plan cleared = plan(load(j), as_built(t));
    EXPECT_THAT(lines(cleared), ElementsAre("~ link r1:eth2 <-> r2:eth2 impair delay_ms 10 -> none"));
    EXPECT_EQ(count(cleared, OpKind::delete_qdisc), 2u);
}

TEST(Plan, RepairsWhatWasChangedByHand) {
    Topology t = load(base());
    Observed o = as_built(t);
    auto& eth0 = o.nodes[0].interfaces[0];
    ASSERT_EQ(eth0.name, "eth0");
    eth0.addresses.erase(eth0.addresses.begin());              // ip addr del 10.0.1.10/24
    eth0.addresses.push_back(*IpPrefix::parse("10.9.9.9/8"));  // ip addr add 10.9.9.9/8
    o.nodes[0].routes.clear();                                 // the kernel dropped the route
    Plan p = plan(t, o);
    EXPECT_THAT(lines(p),
                ElementsAre("~ h1:eth0 addresses +10.0.1.10/24 -10.9.9.9/8", "~ h1 routes +default via 10.0.1.1"));
}

TEST(Plan, RemovesInterfacesTheFileDoesNotName) {
    Topology t = load(base());
    Observed o = as_built(t);
    o.nodes[1].interfaces.push_back({"eth3", 5000, true, 1500, {}});  // left by a failed apply
    o.nodes[1].interfaces.push_back({"sit0", 2, false, 1480, {}});    // the kernel's own
    Plan p = plan(t, o);
    EXPECT_THAT(lines(p), ElementsAre("- interface r1:eth3"));
    ASSERT_EQ(count(p, OpKind::delete_link), 1u);
    EXPECT_EQ(find(p, OpKind::delete_link)->ifindex, 5000);
}

TEST(Plan, KindChangeReplacesTheNodeAndItsLinks) {
    Topology t = load(base());
    Json j = base();
    j["nodes"]["h1"]["kind"] = "router";
    Plan p = plan(load(j), as_built(t));
    expect_well_formed(p);
    EXPECT_THAT(lines(p), ElementsAre("~ node h1 replaced", "~ link h1:eth0 <-> r1:eth1 recreated"));
    EXPECT_EQ(count(p, OpKind::delete_netns), 1u);
    EXPECT_EQ(count(p, OpKind::create_netns), 1u);
    EXPECT_EQ(count(p, OpKind::add_veth), 1u);
    EXPECT_EQ(count(p, OpKind::delete_link), 1u);  // r1's old end, at once
    // r1's end came back with the new pair: its addresses are set again, in place of the old.
    EXPECT_EQ(count(p, OpKind::add_address), 4u);
}

TEST(Plan, ChangedDaemonsAreRestarted) {
    Topology t = load(base());
    Json j = base();
    j["nodes"]["r1"]["daemons"] = Json::parse(R"([["sleep", "2000"]])");
    Plan p = plan(load(j), as_built(t));
    EXPECT_THAT(lines(p), ElementsAre("~ r1 daemons restarted"));
    ASSERT_EQ(count(p, OpKind::stop_processes), 1u);
    EXPECT_FALSE(find(p, OpKind::stop_processes)->all_processes);
    EXPECT_EQ(count(p, OpKind::start_daemons), 1u);
}

TEST(Plan, LinkDownAndUpAgain) {
    Topology t = load(base());
    Observed o = as_built(t);
    Runtime down;
    down.links_down.insert("h1:eth0");
    Plan p = plan(t, o, down);
    expect_well_formed(p);
    EXPECT_THAT(lines(p), ElementsAre("~ link h1:eth0 <-> r1:eth1 down (h1:eth0)"));
    ASSERT_EQ(p.ops.size(), 1u);
    EXPECT_EQ(p.ops[0].kind, OpKind::set_link);
    EXPECT_FALSE(*p.ops[0].up);

    // Down: the kernel dropped h1:eth0's IPv6 address and the route through it.
    Observed after = o;
    after.runtime = down;
    auto& eth0 = after.nodes[0].interfaces[0];
    eth0.admin_up = false;
    eth0.addresses = {*IpPrefix::parse("10.0.1.10/24")};
    after.nodes[0].routes.clear();
    EXPECT_TRUE(plan(t, after, down).empty());  // nothing more to do while it is down
    Plan up = plan(t, after);
    expect_well_formed(up);
    EXPECT_THAT(lines(up), ElementsAre("~ link h1:eth0 <-> r1:eth1 up (h1:eth0)"));
    EXPECT_EQ(count(up, OpKind::add_address), 1u);
    EXPECT_EQ(find(up, OpKind::add_address)->prefix.to_string(), "fd00:1::10/64");
    EXPECT_EQ(count(up, OpKind::add_route), 1u);
    EXPECT_EQ(count(up, OpKind::wait_links), 1u);
}

TEST(Plan, NodeStopPowersItOff) {
    Topology t = load(base());
    Runtime rt;
    rt.nodes_stopped.insert("r1");
    Plan p = plan(t, as_built(t), rt);
    expect_well_formed(p);
    EXPECT_THAT(lines(p), ElementsAre("~ node r1 stopped"));
    ASSERT_EQ(count(p, OpKind::stop_processes), 1u);
    EXPECT_TRUE(find(p, OpKind::stop_processes)->all_processes);
    std::vector<std::string> downs;
    for (std::size_t i = 0; i < p.ops.size(); ++i)
        if (p.ops[i].kind == OpKind::set_link) downs.push_back(p.describe(t, i));
    EXPECT_THAT(downs, UnorderedElementsAre("r1: setting eth1 down", "r1: setting eth2 down"));
}

TEST(Plan, OnlyDumpedNodesAreCompared) {
    Topology t = load(base());
    Observed o = as_built(t);
    for (auto& on : o.nodes) {
        on.dumped = false;
        on.interfaces.clear();
        on.routes.clear();
    }
    EXPECT_TRUE(plan(t, o).empty());
}

// The change lines as docs/operate.md shows them (`labctl apply`, `--dry-run`).
TEST(Plan, ChangeLinesAsDocumented) {
    EXPECT_EQ((Change{'+', "node", "h4", ""}).line(), "+ node h4");
    EXPECT_EQ((Change{'-', "link", "h1:eth0 <-> sw1:p1", ""}).line(), "- link h1:eth0 <-> sw1:p1");
    EXPECT_EQ((Change{'~', "interface", "h1:eth0", "addresses +10.0.1.12/24 -10.0.1.10/24"}).line(),
              "~ h1:eth0 addresses +10.0.1.12/24 -10.0.1.10/24");
    EXPECT_EQ((Change{'~', "link", "r1:eth2 <-> r2:eth2", "impair delay_ms 10 -> 50"}).line(),
              "~ link r1:eth2 <-> r2:eth2 impair delay_ms 10 -> 50");
}

}  // namespace
}  // namespace labctl::plan
