// The private functions a test build exposes to fill the emulated callout's
// table and read what it saw (csrc/core/wfp/emulated). Compiled only
// with WFPREDIRECT_EMULATED_CALLOUT; a release _core has none of them.
#pragma once

#include <pybind11/pybind11.h>

namespace wfpredirect::python {

void init_emulated_callout(pybind11::module_& module);

} // namespace wfpredirect::python
