// Turns a core Status into the package's exceptions: the one place where
// native errors become Python ones (docs/design.md, "Errors").
#pragma once

#include <cstddef>

#include <pybind11/pybind11.h>

#include "../core/status.hpp"

namespace wfpredirect::python {

namespace py = pybind11;

// Imports the exception classes from wfpredirect._errors.
void init_errors(py::module_& module);

// Sets the Python error for a failed status and throws
// py::error_already_set. `function` is the public function's name;
// `capacity` is the caller's buffer size for buffer_too_small.
[[noreturn]] void throw_status(const char* function, const core::Status& status,
                               std::size_t capacity = 0);

// The exception throw_status raises, built and returned instead (a new
// reference), for a caller that raises it later: ValueError for an invalid
// argument, else the outcome's class with errno, winerror and required set.
py::object status_exception(const char* function, const core::Status& status,
                            std::size_t capacity = 0);

// TypeError/ValueError/OverflowError naming the function.
[[noreturn]] void throw_error(PyObject* type, const char* function, const char* message);

} // namespace wfpredirect::python
