#pragma once
// What the page shows of one lab, as JSON: the file's nodes, links and checks, each with
// its live state. Pure: the live state comes in through the two callables (a LabWatcher
// in `labctl serve`, fixed values in unit tests).
//
// {"name", "description",
//  "nodes":  [{"name", "kind", "state": "up" | "stopped" | "missing"}],
//  "links":  [{"id": "link-I", "endpoints": "A:IF B:IF", "state": "up" | "down" | "impaired",
//              "impair": "delay 10 ms, loss 1%" (when impaired), "ends": [{"end", "state"}...]}],
//  "checks": [{"label", "expect", "result": <engine::to_json(CheckResult)> | null}],
//  "running": bool}

#include <cstddef>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>

#include "events/events.hpp"
#include "topology/model.hpp"

namespace labctl::serve {

// `raw`: the topology file as JSON (for the checks as written); `status`: Lab::status();
// `results`: the last check results (an array in the order of the file's checks) or null.
// Fields of `status` this version does not know are ignored; those it looks for may be
// absent. Throws nothing but std::bad_alloc.
nlohmann::json make_view(
    const topology::Topology& topo, const nlohmann::json& raw, const nlohmann::json& status,
    const nlohmann::json& results, bool running, const std::function<bool(std::size_t node)>& node_present,
    const std::function<events::InterfaceState(std::size_t node, const std::string& ifname)>& iface);

// "delay 10 ms, jitter 2 ms, loss 1.5%, rate 100 Mbit/s": an impairment object (as in
// the file: delay_ms, jitter_ms, loss_pct, rate_mbit, duplicate_pct, reorder_pct).
std::string impair_text(const nlohmann::json& impair);

}  // namespace labctl::serve
