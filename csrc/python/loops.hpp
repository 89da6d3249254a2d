// The loop registry (wfpredirect/_loops.py): the local address of each open
// upstream connection this process made, which query_redirect_info compares
// an accepted connection's peer with (docs/design.md, "One pass per
// connection"). Addresses only: no socket calls here.
#pragma once

#include <pybind11/pybind11.h>

#include "../core/common/socket_address.hpp"

namespace wfpredirect::python {

namespace py = pybind11;

// The private functions _remember_upstream and _forget_upstream.
void init_loops(py::module_& module);

// Whether any upstream is open (one atomic read, no lock).
bool any_open_upstream();

// Whether `address` (IPv4-mapped as IPv4; flow information and scope left
// out) is the local address of an open upstream.
bool is_open_upstream(const core::SocketAddress& address);

} // namespace wfpredirect::python
