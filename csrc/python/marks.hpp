// The netfilter marks in Python: conversion only. The rule (defaults,
// variables, grammar, precedence, checks) is the core's
// (csrc/core/netfilter/marks.hpp).
#pragma once

#include <string>

#include <pybind11/pybind11.h>

#include "../core/operations.hpp"

namespace wfpredirect::python {

namespace py = pybind11;

// The private functions and constants wfpredirect/_marks.py uses:
// _configure_marks, _resolve_marks, _parse_mark and the defaults and
// variable names.
void init_marks(py::module_& module);

// The process's marks (configured at import), valid for its life.
const core::MarkConfig& configured_marks();

// The marks for one call with the keywords `loop_mark` and `mark_mask`
// (None keeps the configured value). `error_storage` owns the text an
// invalid combination points to.
core::MarkConfig marks_for_call(PyObject* loop_mark, PyObject* mark_mask, const char* function,
                                std::string& error_storage);

} // namespace wfpredirect::python
