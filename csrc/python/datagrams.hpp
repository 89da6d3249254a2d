#pragma once

#include <pybind11/pybind11.h>

namespace wfpredirect::python {

namespace py = pybind11;

// enable_datagram_records, recvmsg_redirect(_into), sendmsg_redirect and,
// on Linux, the private _prepare_datagram_reply_socket.
void init_datagrams(py::module_& module);

} // namespace wfpredirect::python
