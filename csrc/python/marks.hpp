// The netfilter marks the operations use: configured once at import by the
// facade (from WFPREDIRECT_LOOP_MARK / WFPREDIRECT_MARK_MASK), overridable
// per call with keywords.
#pragma once

#include <string>

#include <pybind11/pybind11.h>

#include "../core/operations.hpp"

namespace wfpredirect::python {

namespace py = pybind11;

// Adds the private _configure_marks(loop_mark, mark_mask, loop_error,
// mark_error) that wfpredirect calls once at import.
void init_marks(py::module_& module);

// The configured marks, valid for the life of the process.
const core::MarkConfig& configured_marks();

// The marks for one call with keyword overrides (None keeps the configured
// value). `error_storage` owns the text an invalid combination points to.
core::MarkConfig marks_for_call(PyObject* loop_mark, PyObject* mark_mask, const char* function,
                                std::string& error_storage);

} // namespace wfpredirect::python
