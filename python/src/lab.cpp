// engine::Lab for Python. Every call that may block (netlink, namespaces, pings,
// processes, the lab lock, the state directory) runs with the GIL released; the engine
// does its namespace work on threads of its own, so no Python thread ever changes
// namespace. Arguments are converted before the GIL is released, results after.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <chrono>
#include <pybind11_json/pybind11_json.hpp>

#include "bindings.hpp"
#include "engine/lab.hpp"

namespace py = pybind11;

namespace labctl::python {

namespace {

using engine::Lab;
using release = py::call_guard<py::gil_scoped_release>;
using std::chrono::milliseconds;

milliseconds to_ms(double seconds) {
    if (!(seconds >= 0)) throw py::value_error("a time must be a non-negative number of seconds");
    return milliseconds(static_cast<long long>(seconds * 1000.0 + 0.5));
}

// nlohmann::json -> dict/list, with the GIL held (pybind11_json builds Python objects).
py::object to_python(const nlohmann::json& j) { return pyjson::from_json(j); }

py::list changes(const std::vector<plan::Change>& cs) {
    py::list out;
    for (const auto& c : cs) out.append(py::make_tuple(std::string(1, c.op), c.kind, c.target, c.detail, c.line()));
    return out;
}

}  // namespace

void init_lab(py::module_& m) {
    py::class_<Lab>(m, "Lab")
        .def_static("from_file", &Lab::from_file, py::arg("path"), py::arg("name") = std::string(), release(),
                    "Loads and validates a topology file; touches nothing. Raises TopologyError.")
        .def_static("from_text", &Lab::from_text, py::arg("text"), py::arg("source"), py::arg("name") = std::string(),
                    release(), "Validates JSON text; `source` names it in messages. Raises TopologyError.")
        .def_static("attach", &Lab::attach, py::arg("name"), release(),
                    "A running lab, from its state directory. Raises LabError when it is not up.")
        .def_property_readonly("name", &Lab::name)
        .def_property_readonly("description", [](const Lab& l) { return l.topology().description; })
        .def_property_readonly("source", [](const Lab& l) { return l.topology().source; })
        .def_property_readonly("nodes",
                               [](const Lab& l) {
                                   std::vector<std::string> names;
                                   for (const auto& n : l.topology().nodes) names.push_back(n.name);
                                   return names;
                               })
        .def_property_readonly("namespaces",
                               [](const Lab& l) {
                                   std::vector<std::string> names;
                                   for (const auto& n : l.topology().nodes) names.push_back(n.netns);
                                   return names;
                               })
        .def("up", &Lab::up, py::arg("verify") = true, release())
        .def("is_up", &Lab::is_up, release())
        .def("runs_this_topology", &Lab::runs_this_topology, release())
        .def("verify", &Lab::verify, py::arg("all_pairs") = false, release())
        .def(
            "ping",
            [](Lab& l, const std::string& from, const std::string& to, int count, double timeout, double interval,
               int family) {
                auto t = to_ms(timeout), i = to_ms(interval);
                py::gil_scoped_release unlocked;
                return l.ping(from, to, count, t, i, {}, family);
            },
            py::arg("src"), py::arg("dst"), py::arg("count") = 3, py::arg("timeout") = 1.0, py::arg("interval") = 0.2,
            py::arg("family") = 0)
        .def(
            "exec",
            [](Lab& l, const std::string& node, const std::vector<std::string>& argv,
               const std::optional<std::string>& input, std::optional<double> timeout,
               const std::map<std::string, std::string>& env, const std::string& cwd) {
                std::optional<milliseconds> t;
                if (timeout) t = to_ms(*timeout);
                py::gil_scoped_release unlocked;
                return l.exec(node, argv, input, t, env, cwd);
            },
            py::arg("node"), py::arg("argv"), py::arg("input") = py::none(), py::arg("timeout") = py::none(),
            py::arg("env") = std::map<std::string, std::string>{}, py::arg("cwd") = std::string())
        .def(
            "start",
            [](Lab& l, const std::string& node, const std::vector<std::string>& argv,
               const std::map<std::string, std::string>& env, const std::string& cwd) {
                py::gil_scoped_release unlocked;
                auto b = l.start(node, argv, env, cwd);
                return std::make_tuple(b.pid, b.start_time, b.log);
            },
            py::arg("node"), py::arg("argv"), py::arg("env") = std::map<std::string, std::string>{},
            py::arg("cwd") = std::string())
        .def("status",
             [](const Lab& l) {
                 nlohmann::json j;
                 {
                     py::gil_scoped_release unlocked;
                     j = l.status();
                 }
                 return to_python(j);
             })
        .def("down", &Lab::down, release())
        // Changes as tuples (op, kind, target, detail, line); labctl.Change wraps them.
        .def(
            "apply",
            [](Lab& l, bool dry_run, bool verify) {
                engine::ApplyResult r;
                {
                    py::gil_scoped_release unlocked;
                    r = l.apply(dry_run, verify);
                }
                return py::make_tuple(changes(r.changes), r.checks, r.notes, r.brought_up);
            },
            py::arg("dry_run") = false, py::arg("verify") = true)
        .def(
            "link_state",
            [](Lab& l, const std::string& end, bool up) {
                std::vector<plan::Change> r;
                {
                    py::gil_scoped_release unlocked;
                    r = l.link_state(end, up);
                }
                return changes(r);
            },
            py::arg("end"), py::arg("up"))
        .def(
            "impair",
            [](Lab& l, const std::string& end, std::optional<double> delay_ms, std::optional<double> jitter_ms,
               std::optional<double> loss_pct, std::optional<double> rate_mbit, std::optional<double> duplicate_pct,
               std::optional<double> reorder_pct) {
                topology::Impairment im{delay_ms, jitter_ms, loss_pct, rate_mbit, duplicate_pct, reorder_pct};
                std::vector<plan::Change> r;
                {
                    py::gil_scoped_release unlocked;
                    r = l.impair(end, im.any() ? std::optional<topology::Impairment>(im) : std::nullopt);
                }
                return changes(r);
            },
            py::arg("end"), py::arg("delay_ms") = py::none(), py::arg("jitter_ms") = py::none(),
            py::arg("loss_pct") = py::none(), py::arg("rate_mbit") = py::none(), py::arg("duplicate_pct") = py::none(),
            py::arg("reorder_pct") = py::none())
        .def(
            "node_power",
            [](Lab& l, const std::string& node, const std::string& action) {
                engine::NodeAction a;
                if (action == "stop") a = engine::NodeAction::stop;
                else if (action == "start") a = engine::NodeAction::start;
                else if (action == "restart") a = engine::NodeAction::restart;
                else throw py::value_error("a node action is stop, start or restart");
                std::vector<plan::Change> r;
                {
                    py::gil_scoped_release unlocked;
                    r = l.node_power(node, a);
                }
                return changes(r);
            },
            py::arg("node"), py::arg("action"))
        .def("require_same_topology", &Lab::require_same_topology, release());

    m.attr("MAX_PING_COUNT") = engine::kMaxPingCount;
    m.def("down", &engine::down, py::arg("name"), release(),
          "Removes the lab named `name`; False when there was nothing to remove.");
    m.def("down_all", &engine::down_all, release(), "Removes every lab labctl knows of; their names.");
    m.def("status_all", [] {
        nlohmann::json j;
        {
            py::gil_scoped_release unlocked;
            j = engine::status_all();
        }
        return to_python(j);
    });
    m.def("require_privileges", &engine::require_privileges, release(),
          "Raises LabError unless we have CAP_NET_ADMIN and CAP_SYS_ADMIN.");
}

}  // namespace labctl::python
