#include "operations.hpp"

#include <string>
#include <utility>

#include "../core/backend.hpp"
#include "../core/wfpsampler_context.hpp"
#include "arguments.hpp"
#include "conversions.hpp"
#include "errors.hpp"
#include "marks.hpp"

namespace wfpredirect::python {
namespace {

py::object query_redirect_records(py::handle sock) {
    constexpr const char* kName = "query_redirect_records";
    const core::SocketHandle handle = to_socket_handle(sock.ptr(), kName);
    core::ByteBuffer buffer;
    const core::MarkConfig& marks = configured_marks();
    const core::Status status =
        run_core([&] { return core::query_redirect_records(handle, buffer, marks); });
    if (!status.ok())
        throw_status(kName, status);
    return to_redirect_records(buffer.data(), status.size);
}

std::size_t query_redirect_records_into(py::handle sock, py::handle buffer) {
    constexpr const char* kName = "query_redirect_records_into";
    const core::SocketHandle handle = to_socket_handle(sock.ptr(), kName);
    const HeldBuffer out = HeldBuffer::writable(buffer.ptr(), kName);
    const core::MarkConfig& marks = configured_marks();
    const core::Status status = run_core(
        [&] { return core::query_redirect_records_into(handle, out.data(), out.size(), marks); });
    if (!status.ok())
        throw_status(kName, status, out.size());
    return status.size;
}

py::object query_redirect_context(py::handle sock) {
    constexpr const char* kName = "query_redirect_context";
    const core::SocketHandle handle = to_socket_handle(sock.ptr(), kName);
    core::ByteBuffer buffer;
    const core::MarkConfig& marks = configured_marks();
    const core::Status status =
        run_core([&] { return core::query_redirect_context(handle, buffer, marks); });
    if (!status.ok())
        throw_status(kName, status);
    if (status.size == 0)
        return py::none();
    return py::bytes(reinterpret_cast<const char*>(buffer.data()), status.size);
}

std::size_t query_redirect_context_into(py::handle sock, py::handle buffer) {
    constexpr const char* kName = "query_redirect_context_into";
    const core::SocketHandle handle = to_socket_handle(sock.ptr(), kName);
    const HeldBuffer out = HeldBuffer::writable(buffer.ptr(), kName);
    const core::MarkConfig& marks = configured_marks();
    const core::Status status = run_core(
        [&] { return core::query_redirect_context_into(handle, out.data(), out.size(), marks); });
    if (!status.ok())
        throw_status(kName, status, out.size());
    return status.size;
}

void set_redirect_records(py::handle sock, py::handle records, py::handle loop_mark,
                          py::handle mark_mask) {
    constexpr const char* kName = "set_redirect_records";
    const core::SocketHandle handle = to_socket_handle(sock.ptr(), kName);
    const HeldBuffer in = HeldBuffer::readable(records.ptr(), kName, "records");
    if (in.size() == 0 || in.size() > core::kMaxQuerySize) {
        const std::string text = "records must be 1 to " + std::to_string(core::kMaxQuerySize) +
                                 " bytes, not " + std::to_string(in.size());
        throw_error(PyExc_ValueError, kName, text.c_str());
    }
    std::string error_storage;
    const core::MarkConfig marks =
        marks_for_call(loop_mark.ptr(), mark_mask.ptr(), kName, error_storage);
    const core::Status status =
        run_core([&] { return core::set_redirect_records(handle, in.data(), in.size(), marks); });
    if (!status.ok())
        throw_status(kName, status);
}

py::tuple original_destination(py::handle sock) {
    constexpr const char* kName = "original_destination";
    const core::SocketHandle handle = to_socket_handle(sock.ptr(), kName);
    core::SocketAddress address;
    const core::MarkConfig& marks = configured_marks();
    const core::Status status =
        run_core([&] { return core::original_destination(handle, address, marks); });
    if (!status.ok())
        throw_status(kName, status);
    return to_address_tuple(address);
}

py::tuple decode_wfpsampler_context(py::handle context) {
    constexpr const char* kName = "decode_wfpsampler_context";
    const HeldBuffer in = HeldBuffer::readable(context.ptr(), kName, "context");
    core::SocketAddress remote;
    core::SocketAddress local;
    const core::Status status =
        core::wfp::decode_wfpsampler_context(in.data(), in.size(), remote, local);
    if (!status.ok())
        throw_status(kName, status);
    return py::make_tuple(to_address_tuple(remote), to_address_tuple(local));
}

} // namespace

void init_operations(py::module_& module) {
    module.def("query_redirect_records", &query_redirect_records, py::arg("sock"),
               "The redirect records of the accepted connection `sock`.");
    module.def("query_redirect_records_into", &query_redirect_records_into, py::arg("sock"),
               py::arg("buffer"),
               "Write the redirect records into `buffer`; return the bytes written.");
    module.def("query_redirect_context", &query_redirect_context, py::arg("sock"),
               "The redirect context of `sock`, or None for a redirected connection "
               "without one.");
    module.def("query_redirect_context_into", &query_redirect_context_into, py::arg("sock"),
               py::arg("buffer"),
               "Write the redirect context into `buffer`; return the bytes written (0: none).");
    module.def("set_redirect_records", &set_redirect_records, py::arg("sock"), py::arg("records"),
               py::kw_only(), py::arg("loop_mark") = py::none(), py::arg("mark_mask") = py::none(),
               "Attach `records` to the new socket `sock`, before bind/connect.");
    module.def("original_destination", &original_destination, py::arg("sock"),
               "Where the redirected connection `sock` was originally addressed.");
    module.def("decode_wfpsampler_context", &decode_wfpsampler_context, py::arg("context"),
               "(remote, local): the original addresses in a context stored by Microsoft's "
               "WFPSampler callout (two Windows SOCKADDR_STORAGE).");
}

} // namespace wfpredirect::python
