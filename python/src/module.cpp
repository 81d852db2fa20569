// labctl._core: the engine for Python. Private: the labctl package on top is the API.
#include "bindings.hpp"
#include "userns/userns.hpp"

PYBIND11_MODULE(_core, m) {
    m.doc() = "labctl engine bindings (private; use the labctl package)";
    m.attr("__version__") = LABCTL_VERSION;
    // Without privileges the whole process joins the user namespace of the caller's keeper
    // (userns/), now, while the interpreter has one thread; a failure is raised (as
    // LabError) by the first call that needs a lab, so that validate() still works.
    labctl::userns::enter_if_unprivileged();
    m.def(
        "rootless", [] { return labctl::userns::active(); },
        "Whether this process runs labs rootless (joined its user's keeper).");
    m.def(
        "rootless_error", [] { return labctl::userns::join_error(); },
        "Why rootless mode could not be entered (\"\" when it was, or root).");
    labctl::python::init_errors(m);
    labctl::python::init_results(m);
    labctl::python::init_lab(m);
    labctl::python::init_capture(m);
}
