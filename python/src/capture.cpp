// Packet capture for Python: a capture running on an engine thread into a file, started
// by capture_start() and ended by stop(). Opening the sockets, and the wait in stop(),
// run with the GIL released.
#include <fcntl.h>
#include <pybind11/chrono.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <memory>

#include "base/error.hpp"
#include "bindings.hpp"
#include "engine/lab.hpp"

namespace py = pybind11;

namespace labctl::python {

void init_capture(py::module_& m) {
    using capture::Background;
    using capture::InterfaceStats;
    using capture::Stats;

    py::class_<InterfaceStats>(m, "CaptureInterfaceStats")
        .def_readonly("interface", &InterfaceStats::label)
        .def_readonly("captured", &InterfaceStats::captured)
        .def_readonly("received", &InterfaceStats::received)
        .def_readonly("kernel_drops", &InterfaceStats::kernel_drops);
    py::class_<Stats>(m, "CaptureStats")
        .def_readonly("interfaces", &Stats::interfaces)
        .def_property_readonly("captured", &Stats::captured)
        .def_property_readonly("received", &Stats::received)
        .def_property_readonly("kernel_drops", &Stats::kernel_drops)
        .def_readonly("out_of_order", &Stats::out_of_order);

    py::class_<Background>(m, "Capture")
        .def("stop", &Background::stop, py::call_guard<py::gil_scoped_release>(),
             "Stops, waits until the file is complete, returns the counts.")
        .def(
            "wait",
            [](Background& b, double timeout) {
                auto ms = std::chrono::milliseconds(static_cast<long long>(timeout * 1000.0 + 0.5));
                py::gil_scoped_release unlocked;
                return b.wait(ms);
            },
            py::arg("timeout"), "True once the capture ended by itself (count or duration).");

    m.def(
        "capture_start",
        [](const engine::Lab& lab, const std::vector<std::string>& interfaces, bool all, const std::string& path,
           const std::string& filter, std::uint64_t count, std::optional<double> duration) {
            engine::CaptureRequest request;
            request.interfaces = interfaces;
            request.all = all;
            request.options.filter = filter;
            request.options.count = count;
            if (duration) {
                if (!(*duration > 0)) throw py::value_error("duration must be a positive number of seconds");
                request.options.duration = std::chrono::milliseconds(static_cast<long long>(*duration * 1000.0 + 0.5));
            }
            py::gil_scoped_release unlocked;
            auto cap = lab.capture(request);
            UniqueFd out(::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
            if (!out) throw_last_errno("capture: creating " + path);
            return std::make_unique<Background>(std::move(cap), std::move(out));
        },
        py::arg("lab"), py::arg("interfaces"), py::arg("all"), py::arg("path"), py::arg("filter"), py::arg("count"),
        py::arg("duration"), "Starts capturing into `path`; capturing from the moment it returns. Raises LabError.");
}

}  // namespace labctl::python
