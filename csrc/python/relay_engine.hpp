// RelayEngine, the native relay's Python object. Availability: Linux.
#pragma once

#include <pybind11/pybind11.h>

namespace wfpredirect::python {

namespace py = pybind11;

#if defined(__linux__)
void init_relay_engine(py::module_& module);
#endif

} // namespace wfpredirect::python
