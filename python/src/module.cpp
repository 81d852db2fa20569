// labctl._core: the engine for Python. Private: the labctl package on top is the API.
#include "bindings.hpp"

PYBIND11_MODULE(_core, m) {
    m.doc() = "labctl engine bindings (private; use the labctl package)";
    m.attr("__version__") = LABCTL_VERSION;
    labctl::python::init_errors(m);
    labctl::python::init_results(m);
    labctl::python::init_lab(m);
    labctl::python::init_capture(m);
}
