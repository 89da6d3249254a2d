// wfpredirect._core: the pybind11 module. Each area registers itself; see
// docs/design.md for the layers (no socket calls here).
#include <pybind11/pybind11.h>

#include "conversions.hpp"
#include "datagrams.hpp"
#include "errors.hpp"
#include "loops.hpp"
#include "marks.hpp"
#include "operations.hpp"
#include "relay_engine.hpp"
#ifdef WFPREDIRECT_EMULATED_CALLOUT
#include "emulated/emulated_callout.hpp"
#endif

namespace py = pybind11;

PYBIND11_MODULE(_core, module, py::mod_gil_not_used()) {
    module.doc() = "Native core of wfpredirect; import the names from wfpredirect instead.";
    wfpredirect::python::init_errors(module);
    wfpredirect::python::init_conversions();
    wfpredirect::python::init_constants(module);
    wfpredirect::python::init_marks(module);
    wfpredirect::python::init_operations(module);
    wfpredirect::python::init_loops(module);
    wfpredirect::python::init_datagrams(module);
#if defined(__linux__)
    wfpredirect::python::init_relay_engine(module);
#endif
#ifdef WFPREDIRECT_EMULATED_CALLOUT
    wfpredirect::python::init_emulated_callout(module);
#endif
}
