#include "serve/view.hpp"

#include <cstdio>

namespace labctl::serve {

namespace {

using Json = nlohmann::json;

// The node's entry in `status`, or null.
const Json* status_node(const Json& status, const std::string& name) {
    if (!status.is_object() || !status.contains("nodes") || !status["nodes"].is_array()) return nullptr;
    for (const auto& n : status["nodes"])
        if (n.is_object() && n.value("name", "") == name) return &n;
    return nullptr;
}

// A node powered off by `labctl node stop`, however status words it.
bool stopped(const Json& n) {
    for (const char* key : {"state", "power", "runtime_state"})
        if (n.contains(key) && n[key].is_string() && n[key].get<std::string>() == "stopped") return true;
    return n.contains("stopped") && n["stopped"].is_boolean() && n["stopped"].get<bool>();
}

std::string check_label(const Json& c) {
    if (!c.is_object()) return "?";
    if (c.contains("name") && c["name"].is_string()) return c["name"].get<std::string>();
    auto text = [](const Json& v) {
        if (v.is_string()) return v.get<std::string>();
        if (v.is_array()) {
            std::string out;
            for (const auto& a : v) out += (out.empty() ? "" : " ") + (a.is_string() ? a.get<std::string>() : a.dump());
            return out;
        }
        return v.dump();
    };
    if (c.contains("on") && c.contains("run")) return text(c["on"]) + ": " + text(c["run"]);
    std::string label =
        (c.contains("from") ? text(c["from"]) : "?") + " -> " + (c.contains("to") ? text(c["to"]) : "?");
    if (c.contains("port")) label += " port " + c["port"].dump();
    return label;
}

Json impair_json(const topology::Impairment& x) {
    Json j = Json::object();
    auto put = [&](const char* key, const std::optional<double>& v) {
        if (v) j[key] = *v;
    };
    put("delay_ms", x.delay_ms);
    put("jitter_ms", x.jitter_ms);
    put("loss_pct", x.loss_pct);
    put("rate_mbit", x.rate_mbit);
    put("duplicate_pct", x.duplicate_pct);
    put("reorder_pct", x.reorder_pct);
    return j;
}

}  // namespace

std::string impair_text(const Json& impair) {
    if (!impair.is_object()) return "";
    static const std::pair<const char*, std::pair<const char*, const char*>> fields[] = {
        {"delay_ms", {"delay ", " ms"}},        {"jitter_ms", {"jitter ", " ms"}},
        {"loss_pct", {"loss ", "%"}},           {"rate_mbit", {"rate ", " Mbit/s"}},
        {"duplicate_pct", {"duplicate ", "%"}}, {"reorder_pct", {"reorder ", "%"}}};
    std::string out;
    for (const auto& [key, words] : fields) {
        if (!impair.contains(key) || !impair[key].is_number()) continue;
        char buf[64];
        std::snprintf(buf, sizeof buf, "%s%g%s", words.first, impair[key].get<double>(), words.second);
        out += (out.empty() ? "" : ", ") + std::string(buf);
    }
    return out;
}

Json make_view(const topology::Topology& topo, const Json& raw, const Json& status, const Json& results, bool running,
               const std::function<bool(std::size_t)>& node_present,
               const std::function<events::InterfaceState(std::size_t, const std::string&)>& iface) {
    Json v{{"name", topo.name}, {"description", topo.description}, {"running", running}};
    Json nodes = Json::array();
    for (std::size_t n = 0; n < topo.nodes.size(); ++n) {
        const auto& node = topo.nodes[n];
        std::string state = "up";
        const Json* sn = status_node(status, node.name);
        if (!node_present(n) || (sn && sn->contains("present") && (*sn)["present"] == false)) state = "missing";
        else if (sn && stopped(*sn)) state = "stopped";
        nodes.push_back({{"name", node.name}, {"kind", topology::to_string(node.kind)}, {"state", state}});
    }
    v["nodes"] = nodes;

    const Json* status_links =
        status.is_object() && status.contains("links") && status["links"].is_array() ? &status["links"] : nullptr;
    Json links = Json::array();
    for (std::size_t i = 0; i < topo.links.size(); ++i) {
        const auto& link = topo.links[i];
        Json ends = Json::array();
        bool up = true, impaired = false;
        std::string kind;
        for (const auto& end : link.ends) {
            // A missing node's namespace may live on while we watch it: its ends are gone.
            auto s = nodes[end.node]["state"] == "missing" ? events::InterfaceState{}
                                                           : iface(end.node, topo.interface(end).name);
            std::string state = s.up() ? "up" : s.why_down();
            ends.push_back({{"end", topo.end_name(end)}, {"state", state}, {"qdisc", s.root_qdisc}});
            up = up && s.up();
            if (s.impaired()) {
                impaired = true;
                kind = s.root_qdisc;
            }
        }
        Json l{{"id", "link-" + std::to_string(i)},
               {"endpoints", topo.end_name(link.ends[0]) + " " + topo.end_name(link.ends[1])},
               {"state",
                !up            ? "down"
                    : impaired ? "impaired"
                               : "up"},
               {"ends", ends}};
        if (impaired) {
            // What is in force: the status's word for it when it has one (runtime
            // `impair`), else the file's, else just the qdisc the kernel shows.
            std::string text;
            if (status_links && i < status_links->size() && (*status_links)[i].is_object() &&
                (*status_links)[i].contains("impair"))
                text = impair_text((*status_links)[i]["impair"]);
            if (text.empty()) text = impair_text(impair_json(link.impair));
            l["impair"] = text.empty() ? kind + " qdisc" : text;
        }
        links.push_back(l);
    }
    v["links"] = links;

    Json checks = Json::array();
    if (raw.is_object() && raw.contains("checks") && raw["checks"].is_array()) {
        const auto& list = raw["checks"];
        for (std::size_t i = 0; i < list.size(); ++i) {
            Json c{{"label", check_label(list[i])},
                   {"expect", list[i].is_object() ? list[i].value("expect", "reachable") : "reachable"},
                   {"result", results.is_array() && i < results.size() ? results[i] : Json(nullptr)}};
            if (list[i].is_object() && list[i].contains("points")) c["points"] = list[i]["points"];
            checks.push_back(c);
        }
    }
    v["checks"] = checks;
    return v;
}

}  // namespace labctl::serve
