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

}  // namespace

void init_lab(py::module_& m) {
    py::class_<Lab>(m, "Lab")
        .def_static("from_file", &Lab::from_file, py::arg("path"), py::arg("name") = std::string(), release(),
                    "Loads and validates a topology file; touches nothing. Raises TopologyError.")
        .def_static("from_text", &Lab::from_text, py::arg("text"), py::arg("source"), py::arg("name") = std::string(),
                    release(),
                    "Validates JSON text; `source` names it in messages. Raises TopologyError.")
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
        .def("verify", &Lab::verify, py::arg("all_pairs") = false, release())
        .def(
            "ping",
            [](Lab& l, const std::string& from, const std::string& to, int count, double timeout, double interval) {
                auto t = to_ms(timeout), i = to_ms(interval);
                py::gil_scoped_release unlocked;
                return l.ping(from, to, count, t, i);
            },
            py::arg("src"), py::arg("dst"), py::arg("count") = 3, py::arg("timeout") = 1.0,
            py::arg("interval") = 0.2)
        .def(
            "exec",
            [](Lab& l, const std::string& node, const std::vector<std::string>& argv,
               const std::optional<std::string>& input, std::optional<double> timeout) {
                std::optional<milliseconds> t;
                if (timeout) t = to_ms(*timeout);
                py::gil_scoped_release unlocked;
                return l.exec(node, argv, input, t);
            },
            py::arg("node"), py::arg("argv"), py::arg("input") = py::none(), py::arg("timeout") = py::none())
        .def("status",
             [](const Lab& l) {
                 nlohmann::json j;
                 {
                     py::gil_scoped_release unlocked;
                     j = l.status();
                 }
                 return to_python(j);
             })
        .def("down", &Lab::down, release());

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
