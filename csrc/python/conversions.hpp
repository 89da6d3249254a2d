// Conversions shared by the operation bindings: core results to Python
// values, and the rule for when a core call runs without the interpreter lock.
#pragma once

#include <pybind11/pybind11.h>

#include "../core/backend.hpp"
#include "../core/socket_address.hpp"

namespace wfpredirect::python {

namespace py = pybind11;

// Runs a core operation, without the interpreter lock where it may block.
template <typename Operation> auto run_core(Operation&& operation) {
    if constexpr (core::kOperationsMayBlock) {
        py::gil_scoped_release unlocked;
        return operation();
    } else {
        return operation();
    }
}

// (host, port) for IPv4, (host, port, flowinfo, scope_id) for IPv6: the
// socket module's address tuples.
py::tuple to_address_tuple(const core::SocketAddress& address);

} // namespace wfpredirect::python
