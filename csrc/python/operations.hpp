#pragma once

#include <pybind11/pybind11.h>

namespace wfpredirect::python {

namespace py = pybind11;

// The public operations: query/set records, query context, original
// destination.
void init_operations(py::module_& module);

// BACKEND, the Windows constants and SO_ORIGINAL_DST.
void init_constants(py::module_& module);

} // namespace wfpredirect::python
