// Result records as the engine returns them. The labctl package turns them into frozen
// dataclasses with readable reprs; these stay minimal and read-only.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "bindings.hpp"
#include "engine/lab.hpp"

namespace py = pybind11;

namespace labctl::python {

void init_results(py::module_& m) {
    using engine::CheckResult;
    using engine::ExecResult;
    using engine::PingOutcome;
    using engine::UpResult;

    py::class_<CheckResult>(m, "CheckResult")
        .def_property_readonly("kind", [](const CheckResult& r) { return std::string(to_string(r.kind)); })
        .def_readonly("port", &CheckResult::port)
        .def_readonly("name", &CheckResult::name)
        .def_readonly("points", &CheckResult::points)
        .def_readonly("attempts", &CheckResult::attempts)
        .def_readonly("src", &CheckResult::from)
        .def_readonly("dst", &CheckResult::to)
        .def_readonly("address", &CheckResult::address)
        .def_property_readonly("expect", [](const CheckResult& r) { return std::string(to_string(r.expect)); })
        .def_readonly("ok", &CheckResult::ok)
        .def_readonly("sent", &CheckResult::sent)
        .def_readonly("received", &CheckResult::received)
        .def_readonly("rtt_min", &CheckResult::rtt_min)
        .def_readonly("rtt_avg", &CheckResult::rtt_avg)
        .def_readonly("rtt_max", &CheckResult::rtt_max)
        .def_readonly("reason", &CheckResult::reason)
        .def_readonly("returncode", &CheckResult::returncode)
        .def_readonly("output", &CheckResult::output);

    py::class_<UpResult>(m, "UpResult")
        .def_readonly("checks", &UpResult::checks)
        .def_readonly("notes", &UpResult::notes);

    py::class_<ping::Reply>(m, "Reply")
        .def_readonly("seq", &ping::Reply::seq)
        .def_readonly("rtt_ms", &ping::Reply::rtt_ms)
        .def_readonly("ttl", &ping::Reply::ttl);

    py::class_<PingOutcome>(m, "PingOutcome")
        .def_readonly("address", &PingOutcome::address)
        .def_property_readonly("sent", [](const PingOutcome& p) { return p.result.sent; })
        .def_property_readonly("received", [](const PingOutcome& p) { return p.result.received; })
        .def_property_readonly("replies", [](const PingOutcome& p) { return p.result.replies; })
        .def_property_readonly("refused", [](const PingOutcome& p) { return p.result.refused; })
        .def_property_readonly("reason", [](const PingOutcome& p) { return p.result.reason; });

    // Output is bytes here: a program may write anything; the package decodes.
    py::class_<ExecResult>(m, "ExecResult")
        .def_readonly("returncode", &ExecResult::returncode)
        .def_property_readonly("stdout", [](const ExecResult& r) { return py::bytes(r.out); })
        .def_property_readonly("stderr", [](const ExecResult& r) { return py::bytes(r.err); })
        .def_readonly("timed_out", &ExecResult::timed_out);
}

}  // namespace labctl::python
