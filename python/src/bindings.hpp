#pragma once
// labctl._core is built from one init_<area>() per file; module.cpp calls them in order.

#include <pybind11/pybind11.h>

namespace labctl::python {

// C++ errors -> the Python classes of labctl.errors (defined in Python, see errors.cpp).
void init_errors(pybind11::module_& m);
// CheckResult, PingOutcome, ExecResult: plain read-only records.
void init_results(pybind11::module_& m);
// engine::Lab and the module-level engine functions (down, down_all, status_all).
void init_lab(pybind11::module_& m);
// Packet capture: capture_start() and the running Capture (after init_lab: it takes a Lab).
void init_capture(pybind11::module_& m);

}  // namespace labctl::python
