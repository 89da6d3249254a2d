// Conversions shared by the operation bindings: core results to Python
// values, and the rule for when a core call runs without the interpreter lock.
#pragma once

#include <cstddef>
#include <cstdint>

#include <pybind11/pybind11.h>

#include "../core/common/socket_address.hpp"
#include "../core/operations.hpp"

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

// Takes the Python classes the conversions build (from wfpredirect._records).
void init_conversions();

// Whether `object` is a bytes or a RedirectRecords (not another subclass,
// which may define its own buffer): its contents are its buffer.
bool is_plain_bytes(PyObject* object);

// A wfpredirect.RedirectRecords holding a copy of [data, data + size).
py::object to_redirect_records(const std::uint8_t* data, std::size_t size);

// (host, port) for IPv4, (host, port, flowinfo, scope_id) for IPv6: the
// socket module's address tuples.
py::tuple to_address_tuple(const core::SocketAddress& address);

// The reverse, for an address tuple with a numeric host: (host, port) or
// (host, port, flowinfo, scope_id). TypeError, ValueError or OverflowError
// naming `function` otherwise.
core::SocketAddress to_socket_address(PyObject* address, const char* function);

// The RedirectInfo of a connection that was not redirected
// (wfpredirect._records.NOT_REDIRECTED).
py::object not_redirected();

// Whether `address` (an address tuple, on `port`) is where one of
// `listening_addresses` accepts: wfpredirect._addresses.is_listener_address
// for each, with listeners on another port passed over here.
bool is_listener_address(PyObject* listening_addresses, PyObject* address, std::uint16_t port);

// A wfpredirect.RedirectInfo(records, context, original_destination).
py::object to_redirect_info(py::object records, py::object context,
                            py::object original_destination);

// A wfpredirect.Datagram(data, address, records, context, original_destination).
py::object to_datagram(py::object data, py::object address, py::object records, py::object context,
                       py::object original_destination);

} // namespace wfpredirect::python
