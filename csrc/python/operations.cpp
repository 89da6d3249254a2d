#include "operations.hpp"

#include <string>
#include <utility>

#include "../core/common/wfpsampler_context.hpp"
#include "../core/operations.hpp"
#include "arguments.hpp"
#include "conversions.hpp"
#include "errors.hpp"
#include "marks.hpp"
#include "raw_functions.hpp"

namespace wfpredirect::python {
namespace {

// The hot calls (query records, original destination, set records) are
// plain CPython functions (raw_functions.hpp); their text signatures match
// wfpredirect/_core.pyi.

// One core operation on `sock` with the configured marks, run as the GIL
// policy says (run_core); its failure is thrown, named `function`
// (`capacity`: the caller's buffer size, for a too-small answer).
template <typename Operation>
core::Status call_core(const char* function, PyObject* sock, Operation operation,
                       std::size_t capacity = 0) {
    const core::SocketHandle handle = to_socket_handle(sock, function);
    const core::MarkConfig& marks = configured_marks();
    const core::Status status = run_core([&] { return operation(handle, marks); });
    if (!status.ok())
        throw_status(function, status, capacity);
    return status;
}

PyObject* query_redirect_records(PyObject*, PyObject* sock) {
    return call_guarded([sock] {
        core::ByteBuffer buffer;
        const core::Status status =
            call_core("query_redirect_records", sock, [&](auto handle, const auto& marks) {
                return core::query_redirect_records(handle, buffer, marks);
            });
        return to_redirect_records(buffer.data(), status.size).release().ptr();
    });
}

PyObject* query_redirect_records_into(PyObject*, PyObject* const* args, Py_ssize_t nargs) {
    return call_guarded([args, nargs] {
        constexpr const char* kName = "query_redirect_records_into";
        check_positional(kName, static_cast<std::size_t>(nargs), 2, 2);
        const HeldBuffer out = HeldBuffer::writable(args[1], kName);
        const core::Status status = call_core(
            kName, args[0],
            [&](auto handle, const auto& marks) {
                return core::query_redirect_records_into(handle, out.data(), out.size(), marks);
            },
            out.size());
        return PyLong_FromSize_t(status.size);
    });
}

py::object query_redirect_context(PyObject* sock) {
    core::ByteBuffer buffer;
    const core::Status status =
        call_core("query_redirect_context", sock, [&](auto handle, const auto& marks) {
            return core::query_redirect_context(handle, buffer, marks);
        });
    if (status.size == 0)
        return py::none();
    return py::bytes(reinterpret_cast<const char*>(buffer.data()), status.size);
}

std::size_t query_redirect_context_into(PyObject* sock, PyObject* buffer) {
    constexpr const char* kName = "query_redirect_context_into";
    const HeldBuffer out = HeldBuffer::writable(buffer, kName);
    return call_core(
               kName, sock,
               [&](auto handle, const auto& marks) {
                   return core::query_redirect_context_into(handle, out.data(), out.size(), marks);
               },
               out.size())
        .size;
}

PyObject* set_redirect_records(PyObject*, PyObject* const* args, Py_ssize_t nargs,
                               PyObject* kwnames) {
    return call_guarded([args, nargs, kwnames] {
        constexpr const char* kName = "set_redirect_records";
        static const char* const kKeywords[] = {"loop_mark", "mark_mask"};
        const auto positional = static_cast<std::size_t>(nargs);
        check_positional(kName, positional, 2, 2);
        PyObject* keywords[] = {Py_None, Py_None};
        bind_keywords(kName, args, positional, kwnames, kKeywords, keywords, 2);

        const core::SocketHandle handle = to_socket_handle(args[0], kName);
        const HeldBuffer in = HeldBuffer::readable(args[1], kName, "records");
        if (in.size() == 0 || in.size() > core::kMaxQuerySize) {
            const std::string text = "records must be 1 to " + std::to_string(core::kMaxQuerySize) +
                                     " bytes, not " + std::to_string(in.size());
            throw_error(PyExc_ValueError, kName, text.c_str());
        }
        // Without keywords the configured marks hold; the common case skips
        // building a per-call configuration.
        std::string error_storage;
        const core::MarkConfig marks =
            kwnames == nullptr ? configured_marks()
                               : marks_for_call(keywords[0], keywords[1], kName, error_storage);
        const core::Status status = run_core(
            [&] { return core::set_redirect_records(handle, in.data(), in.size(), marks); });
        if (!status.ok())
            throw_status(kName, status);
        return py::none().release().ptr();
    });
}

PyObject* original_destination(PyObject*, PyObject* sock) {
    return call_guarded([sock] {
        core::SocketAddress address;
        call_core("original_destination", sock, [&](auto handle, const auto& marks) {
            return core::original_destination(handle, address, marks);
        });
        return to_address_tuple(address).release().ptr();
    });
}

py::object optional_address(bool present, const core::SocketAddress& address) {
    if (!present)
        return py::none();
    return to_address_tuple(address);
}

// (RedirectInfo(records, context, original_destination), peer, mark,
// error): the fused call behind query_redirect_info. `error` is the exception the first
// failure raises (named after its single query), returned rather than
// raised so that the facade checks for a loop first.
PyObject* query_connection_state(PyObject*, PyObject* const* args, Py_ssize_t nargs) {
    return call_guarded([args, nargs] {
        // Its arguments are query_redirect_info's, and so are their errors.
        constexpr const char* kName = "query_redirect_info";
        check_positional("_query_connection_state", static_cast<std::size_t>(nargs), 1, 1);
        const core::SocketHandle handle = to_socket_handle(args[0], kName);
        const core::MarkConfig& marks = configured_marks();
        core::ConnectionState state;
        run_core([&] { core::query_connection_state(handle, state, marks); });
        // Each piece None unless present (plain assignments: MSVC finds a
        // conditional between py::object and py::none ambiguous).
        py::object records = py::none();
        if (state.has_records)
            records = to_redirect_records(state.records.data(), state.records_size);
        py::object context = py::none();
        if (state.has_context)
            context =
                py::bytes(reinterpret_cast<const char*>(state.context.data()), state.context_size);
        py::object mark = py::none();
        if (state.has_mark)
            mark = py::int_(state.mark);
        py::object error = py::none();
        if (!state.failure.ok())
            error = status_exception(query_name(state.failed_query), state.failure);
        const py::object info = to_redirect_info(
            records, context,
            optional_address(state.has_original_destination, state.original_destination));
        PyObject* result =
            PyTuple_Pack(4, info.ptr(), optional_address(state.has_peer, state.peer).ptr(),
                         mark.ptr(), error.ptr());
        if (result == nullptr)
            throw py::error_already_set();
        return result;
    });
}

py::tuple decode_wfpsampler_context(PyObject* context) {
    constexpr const char* kName = "decode_wfpsampler_context";
    const HeldBuffer in = HeldBuffer::readable(context, kName, "context");
    core::SocketAddress remote;
    core::SocketAddress local;
    const core::Status status =
        core::wfp::decode_wfpsampler_context(in.data(), in.size(), remote, local);
    if (!status.ok())
        throw_status(kName, status);
    return py::make_tuple(to_address_tuple(remote), to_address_tuple(local));
}

PyObject* query_redirect_context_raw(PyObject*, PyObject* const* args, Py_ssize_t nargs) {
    return positional_call(
        "query_redirect_context", args, nargs, 1, 1,
        [](PyObject* const* a, std::size_t) { return query_redirect_context(a[0]); });
}

PyObject* query_redirect_context_into_raw(PyObject*, PyObject* const* args, Py_ssize_t nargs) {
    return positional_call("query_redirect_context_into", args, nargs, 2, 2,
                           [](PyObject* const* a, std::size_t) {
                               return py::int_(query_redirect_context_into(a[0], a[1]));
                           });
}

PyObject* decode_wfpsampler_context_raw(PyObject*, PyObject* const* args, Py_ssize_t nargs) {
    return positional_call(
        "decode_wfpsampler_context", args, nargs, 1, 1,
        [](PyObject* const* a, std::size_t) { return decode_wfpsampler_context(a[0]); });
}

// Every public function: positional-only arguments, keyword-only options,
// and a text signature that matches wfpredirect/_core.pyi.
PyMethodDef functions[] = {
    {"query_redirect_records", reinterpret_cast<PyCFunction>(&query_redirect_records), METH_O,
     "query_redirect_records($module, sock, /)\n--\n\n"
     "query_redirect_records(sock: socket | int, /) -> RedirectRecords\n\n"
     "The redirect records of the accepted connection `sock`."},
    {"query_redirect_records_into",
     reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(&query_redirect_records_into)),
     METH_FASTCALL,
     "query_redirect_records_into($module, sock, buffer, /)\n--\n\n"
     "query_redirect_records_into(sock: socket | int, buffer: bytearray | memoryview, "
     "/) -> int\n\n"
     "Write the redirect records into `buffer`; return the bytes written."},
    {"set_redirect_records",
     reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(&set_redirect_records)),
     METH_FASTCALL | METH_KEYWORDS,
     "set_redirect_records($module, sock, records, /, *, loop_mark=None, mark_mask=None)\n--\n\n"
     "set_redirect_records(sock: socket | int, "
     "records: bytes | bytearray | memoryview, /, *, loop_mark: int | None = None, "
     "mark_mask: int | None = None) -> None\n\n"
     "Attach `records` to the new socket `sock`, before bind/connect."},
    {"original_destination", reinterpret_cast<PyCFunction>(&original_destination), METH_O,
     "original_destination($module, sock, /)\n--\n\n"
     "original_destination(sock: socket | int, /) -> tuple[str, int] | tuple[str, "
     "int, int, int]\n\n"
     "Where the redirected connection `sock` was originally addressed."},
    {"query_redirect_context", fastcall(&query_redirect_context_raw), METH_FASTCALL,
     "query_redirect_context($module, sock, /)\n--\n\n"
     "query_redirect_context(sock: socket | int, /) -> bytes | None\n\n"
     "The redirect context of `sock`, or None for a redirected connection without one."},
    {"query_redirect_context_into", fastcall(&query_redirect_context_into_raw), METH_FASTCALL,
     "query_redirect_context_into($module, sock, buffer, /)\n--\n\n"
     "query_redirect_context_into(sock: socket | int, buffer: bytearray | memoryview, "
     "/) -> int\n\n"
     "Write the redirect context into `buffer`; return the bytes written (0: none)."},
    {"_query_connection_state", fastcall(&query_connection_state), METH_FASTCALL,
     "_query_connection_state($module, sock, /)\n--\n\n"
     "(RedirectInfo, peer, mark, error) of the accepted connection `sock` in one pass: what "
     "query_redirect_info needs. Private: use query_redirect_info."},
    {"decode_wfpsampler_context", fastcall(&decode_wfpsampler_context_raw), METH_FASTCALL,
     "decode_wfpsampler_context($module, context, /)\n--\n\n"
     "decode_wfpsampler_context(context: bytes | bytearray | memoryview, "
     "/) -> tuple[tuple[str, int] | tuple[str, int, int, int], tuple[str, "
     "int] | tuple[str, int, int, int]]\n\n"
     "(remote, local): the original addresses in a context stored by Microsoft's WFPSampler "
     "callout (two Windows SOCKADDR_STORAGE)."},
};

} // namespace

const char* query_name(core::Query query) {
    switch (query) {
    case core::Query::redirect_records:
        return "query_redirect_records";
    case core::Query::redirect_context:
        return "query_redirect_context";
    default:
        return "original_destination";
    }
}

void init_operations(py::module_& module) {
    for (PyMethodDef& definition : functions)
        add_raw_function(module, definition);
}

} // namespace wfpredirect::python
