// Status of a lab (Lab::status) and of every lab (status_all).
#include <net/if_arp.h>
#include <sys/stat.h>

#include <algorithm>
#include <map>

#include "base/error.hpp"
#include "engine/internal.hpp"
#include "engine/lab.hpp"
#include "netns/netns.hpp"
#include "proc/proc.hpp"
#include "rtnl/rtnl.hpp"
#include "state/state.hpp"
#include "userns/userns.hpp"

namespace labctl::engine {

using namespace topology;
using Json = nlohmann::json;

using namespace detail;

nlohmann::json Lab::status() const {
    Json out{{"name", topo_.name}, {"description", topo_.description}};
    auto rec = state::Journal::load(topo_.name);
    out["up"] = rec && rec->complete;
    out["state"] = !rec ? "down" : rec->complete ? "up" : "incomplete";
    if (rec) {
        out["source"] = rec->source;
        out["started"] = rec->started;
        out["state_dir"] = state::state_root() + "/" + topo_.name;
        if (auto lost = userns::keeper_lost(state::state_root() + "/" + topo_.name)) out["keeper_lost"] = *lost;
    }
    Json nodes = Json::array();
    std::size_t missing = 0;
    std::map<std::string, std::uint32_t> mtus;  // "node:ifname" -> the interface's mtu now
    for (const auto& node : topo_.nodes) {
        Json jn{{"name", node.name}, {"kind", to_string(node.kind)}, {"namespace", node.netns}};
        Json ifaces = Json::array();
        bool present = rec && netns::identity(node.netns).has_value();
        jn["present"] = present;
        // A namespace removed behind labctl's back (ip netns del) leaves the node missing.
        jn["state"] = !rec ? "down" : present ? "up" : "missing";
        if (rec && !present) ++missing;
        if (present) {
            try {
                auto ns = netns::open(node.netns);
                auto h = rtnl::Handle::open_in(ns);
                auto links = rtnl::link_dump(h);
                auto addrs = rtnl::addr_dump(h);
                for (const auto& l : links) {
                    Json addresses = Json::array();
                    for (const auto& a : addrs)
                        if (a.ifindex == l.ifindex) addresses.push_back(a.prefix.to_string());
                    static const char* oper[] = {"unknown", "notpresent", "down", "lowerlayerdown",
                                                 "testing", "dormant",    "up"};
                    std::string master;
                    for (const auto& m : links)
                        if (m.ifindex == l.master) master = m.name;
                    // tun devices and lo have no MAC address (ARPHRD_NONE, ARPHRD_LOOPBACK).
                    Json mac = l.type == ARPHRD_ETHER ? Json(mac_to_string(l.mac)) : Json(nullptr);
                    Json ji{{"name", l.name},
                            {"kind", l.kind.empty() ? (l.name == "lo" ? "loopback" : "") : l.kind},
                            {"state", l.operstate < 7 ? oper[l.operstate] : "unknown"},
                            {"mtu", l.mtu},
                            {"mac", mac},
                            {"addresses", addresses}};
                    if (!master.empty()) ji["master"] = master;
                    mtus[node.name + ":" + l.name] = l.mtu;
                    ifaces.push_back(ji);
                }
            } catch (const std::exception& e) {
                jn["error"] = e.what();
            }
        }
        jn["interfaces"] = ifaces;
        Json daemons = Json::array();
        if (rec)
            for (const auto& d : rec->daemons)
                if (d.node == node.name) {
                    bool alive = false;
                    try {
                        alive = proc::is_same_process({d.pid, d.start_time});
                    } catch (const std::exception&) {}
                    Json jd{{"argv", d.argv},
                            {"pid", d.pid},
                            {"running", alive},
                            {"log", d.log},
                            {"state", alive ? "running" : "exited"},
                            {"exit_status", nullptr},
                            {"signal", nullptr}};
                    if (!alive)
                        if (auto st = proc::daemon_exit_status(d.log)) {
                            if (*st >= 0) jd["exit_status"] = *st;
                            else jd["signal"] = -*st;
                        }
                    daemons.push_back(jd);
                }
        jn["daemons"] = daemons;
        nodes.push_back(jn);
    }
    out["nodes"] = nodes;
    if (rec && rec->complete && missing) out["state"] = "degraded";
    Json links = Json::array();
    for (const auto& l : topo_.links) {
        std::string a = topo_.end_name(l.ends[0]), b = topo_.end_name(l.ends[1]);
        Json mtu = l.mtu ? Json(*l.mtu) : Json(nullptr);
        if (auto it = mtus.find(a); it != mtus.end()) mtu = it->second;
        Json impair = Json::object();
        auto put = [&](const char* key, const std::optional<double>& v) {
            if (v) impair[key] = *v;
        };
        put("delay_ms", l.impair.delay_ms);
        put("jitter_ms", l.impair.jitter_ms);
        put("loss_pct", l.impair.loss_pct);
        put("rate_mbit", l.impair.rate_mbit);
        put("duplicate_pct", l.impair.duplicate_pct);
        put("reorder_pct", l.impair.reorder_pct);
        links.push_back({{"endpoints", {a, b}}, {"mtu", mtu}, {"impair", impair}});
    }
    out["links"] = links;
    // Runtime changes in force (labctl link/impair/node), until apply or down.
    plan::Runtime rt = rec ? runtime_from_json(topo_, rec->runtime) : plan::Runtime{};
    Json impaired = Json::object();
    for (const auto& [key, im] : rt.impaired) {
        Json v = Json::object();
        for (auto [f, x] : {std::pair{"delay_ms", im.delay_ms},
                            {"jitter_ms", im.jitter_ms},
                            {"loss_pct", im.loss_pct},
                            {"rate_mbit", im.rate_mbit},
                            {"duplicate_pct", im.duplicate_pct},
                            {"reorder_pct", im.reorder_pct}})
            if (x) v[f] = *x;
        impaired[key] = v;
    }
    out["runtime"] = {{"links_down", rt.links_down}, {"impaired", impaired}, {"nodes_stopped", rt.nodes_stopped}};
    for (auto& jn : out["nodes"]) jn["stopped"] = rt.nodes_stopped.count(jn["name"].get<std::string>()) > 0;
    return out;
}

nlohmann::json status_all() {
    Json labs = Json::array();
    struct stat st {};
    if (::stat(state::state_root().c_str(), &st) != 0) return labs;
    for (const auto& name : state::Journal::list()) {
        auto rec = state::Journal::load(name);
        if (!rec) continue;
        // A lab whose namespace was removed behind labctl's back is degraded.
        bool missing = rec->complete && std::any_of(rec->namespaces.begin(), rec->namespaces.end(), [](const auto& ns) {
                           return !netns::identity(ns.name).has_value();
                       });
        Json j{{"name", name},
               {"state",
                !rec->complete ? "incomplete"
                    : missing  ? "degraded"
                               : "up"},
               {"nodes", rec->namespaces.size()},
               {"daemons", rec->daemons.size()},
               {"source", rec->source},
               {"started", rec->started}};
        if (auto lost = userns::keeper_lost(state::state_root() + "/" + name)) j["keeper_lost"] = *lost;
        labs.push_back(j);
    }
    return labs;
}

}  // namespace labctl::engine
