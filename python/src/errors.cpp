// Exceptions. The classes live in Python (labctl/errors.py) because TopologyError must be
// both a labctl.Error and a ValueError, and ExecError a subprocess.CalledProcessError;
// multiple bases are plain in Python and awkward through py::register_exception. The
// translator here builds instances of those classes with their attributes filled in.
//
// One catch of labctl::Error (base/error.hpp), by its kind:
//   labctl::TopologyError  -> labctl.TopologyError(message, errors=[(pointer, message)], file)
//   labctl::LabError       -> labctl.LabError(message, errno or None)
//   labctl::KernelError    -> labctl.LabError(message, errno, kernel_message)
//   std::system_error      -> labctl.LabError(message, errno) (a thread or a process that
//                             could not be started, from the standard library or Boost)
#include <pybind11/pybind11.h>

#include <system_error>

#include "base/error.hpp"
#include "bindings.hpp"

namespace py = pybind11;

namespace labctl::python {

namespace {

// Raises `cls(*args)`. Looked up per error (sys.modules makes it cheap) rather than kept
// in a static py::object, which would outlive the interpreter at exit.
template <typename... Args>
void raise(const char* cls_name, Args&&... args) {
    try {
        py::object cls = py::module_::import("labctl.errors").attr(cls_name);
        py::object exc = cls(std::forward<Args>(args)...);
        PyErr_SetObject(cls.ptr(), exc.ptr());
    } catch (py::error_already_set& e) {
        // labctl.errors itself failed to import: say so rather than lose the error.
        e.restore();
    }
}

}  // namespace

void init_errors(py::module_&) {
    py::register_exception_translator([](std::exception_ptr p) {
        try {
            if (p) std::rethrow_exception(p);
        } catch (const labctl::Error& e) {
            switch (e.kind()) {
                case labctl::Error::Kind::topology: {
                    const auto& bad = static_cast<const labctl::TopologyError&>(e);
                    py::list errors;
                    for (const auto& problem : bad.problems())
                        errors.append(py::make_tuple(problem.pointer, problem.message));
                    raise("TopologyError", e.what(), errors, bad.file());
                    break;
                }
                case labctl::Error::Kind::kernel:
                    raise("LabError", e.what(), e.errno_value(),
                          static_cast<const labctl::KernelError&>(e).kernel_message());
                    break;
                case labctl::Error::Kind::lab:
                    if (e.errno_value() != 0) raise("LabError", e.what(), e.errno_value());
                    else raise("LabError", e.what(), py::none());
                    break;
            }
        } catch (const std::system_error& e) {
            const auto& cat = e.code().category();
            if (cat == std::generic_category() || cat == std::system_category())
                raise("LabError", e.what(), e.code().value());
            else raise("LabError", e.what(), py::none());
        }
    });
}

}  // namespace labctl::python
