#pragma once

#include <pybind11/pybind11.h>

#include "../core/common/connection_state.hpp"

namespace wfpredirect::python {

namespace py = pybind11;

// The public operations: query/set records, query context, original
// destination.
void init_operations(py::module_& module);

// The single query a fused failure is named after (connection_state.hpp).
const char* query_name(core::Query query);

// BACKEND, the Windows constants and SO_ORIGINAL_DST.
void init_constants(py::module_& module);

} // namespace wfpredirect::python
