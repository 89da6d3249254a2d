#include "operations.hpp"

#include <atomic>
#include <optional>
#include <string>
#include <utility>

#include "../core/common/wfpsampler_context.hpp"
#include "../core/operations.hpp"
#include "arguments.hpp"
#include "conversions.hpp"
#include "errors.hpp"
#include "loops.hpp"
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

// set_redirect_records' body, in its order: the handle, the records, then
// the marks (`loop_mark` and `mark_mask`: None keeps the configured value);
// `check`: whether the socket's state is asked first (the public call) or
// known (the library's own new upstream).
void attach_records(PyObject* sock, PyObject* records, PyObject* loop_mark, PyObject* mark_mask,
                    bool check) {
    constexpr const char* kName = "set_redirect_records";
    const core::SocketHandle handle = to_socket_handle(sock, kName);
    // Records as query_redirect_info returns them (RedirectRecords, or
    // bytes) are read directly; anything else through the buffer protocol.
    std::optional<HeldBuffer> held;
    const std::uint8_t* data = nullptr;
    std::size_t size = 0;
    if (is_plain_bytes(records)) {
        data = reinterpret_cast<const std::uint8_t*>(PyBytes_AS_STRING(records));
        size = static_cast<std::size_t>(PyBytes_GET_SIZE(records));
    } else {
        held.emplace(HeldBuffer::readable(records, kName, "records"));
        data = held->data();
        size = held->size();
    }
    if (size == 0 || size > core::kMaxQuerySize) {
        const std::string text = "records must be 1 to " + std::to_string(core::kMaxQuerySize) +
                                 " bytes, not " + std::to_string(size);
        throw_error(PyExc_ValueError, kName, text.c_str());
    }
    // Without an override (the common case) the configured marks hold, with
    // no per-call configuration built.
    std::string error_storage;
    const core::MarkConfig marks = loop_mark == Py_None && mark_mask == Py_None
                                       ? configured_marks()
                                       : marks_for_call(loop_mark, mark_mask, kName, error_storage);
    const core::Status status = run_core([&] {
        return check ? core::set_redirect_records(handle, data, size, marks)
                     : core::set_upstream_records(handle, data, size, marks);
    });
    if (!status.ok())
        throw_status(kName, status);
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
        attach_records(args[0], args[1], keywords[0], keywords[1], true);
        return py::none().release().ptr();
    });
}

// set_redirect_records(sock, records, loop_mark=, mark_mask=) for a socket
// the library has just made itself (wfpredirect/_upstream.py): the same
// arguments, errors and names, without the check of the socket's state.
PyObject* set_upstream_records(PyObject*, PyObject* const* args, Py_ssize_t nargs) {
    return call_guarded([args, nargs] {
        check_positional("_set_upstream_records", static_cast<std::size_t>(nargs), 4, 4);
        attach_records(args[0], args[1], args[2], args[3], false);
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

// The connection's whole state in one pass, with the configured marks.
void resolve_state(core::SocketHandle handle, core::ConnectionState& state) {
    const core::MarkConfig& marks = configured_marks();
    run_core([&] { core::query_connection_state(handle, state, marks); });
}

// RedirectInfo(records, context, original_destination) of `state`, with its
// original destination given (None when absent).
py::object state_info(const core::ConnectionState& state, py::object destination) {
    // Each piece None unless present (plain assignments: MSVC finds a
    // conditional between py::object and py::none ambiguous).
    py::object records = py::none();
    if (state.has_records)
        records = to_redirect_records(state.records.data(), state.records_size);
    py::object context = py::none();
    if (state.has_context)
        context =
            py::bytes(reinterpret_cast<const char*>(state.context.data()), state.context_size);
    return to_redirect_info(std::move(records), std::move(context), std::move(destination));
}

// (RedirectInfo(records, context, original_destination), peer, mark,
// error): the fused pass with every piece it read, for the tests (and
// anyone who wants the facts query_redirect_info judges). `error` is the
// exception the first failure raises (named after its single query).
PyObject* query_connection_state(PyObject*, PyObject* const* args, Py_ssize_t nargs) {
    return call_guarded([args, nargs] {
        // Its arguments are query_redirect_info's, and so are their errors.
        constexpr const char* kName = "query_redirect_info";
        check_positional("_query_connection_state", static_cast<std::size_t>(nargs), 1, 1);
        const core::SocketHandle handle = to_socket_handle(args[0], kName);
        core::ConnectionState state;
        resolve_state(handle, state);
        py::object mark = py::none();
        if (state.has_mark)
            mark = py::int_(state.mark);
        py::object error = py::none();
        if (!state.failure.ok())
            error = status_exception(query_name(state.failed_query), state.failure);
        const py::object info = state_info(
            state, optional_address(state.has_original_destination, state.original_destination));
        PyObject* result =
            PyTuple_Pack(4, info.ptr(), optional_address(state.has_peer, state.peer).ptr(),
                         mark.ptr(), error.ptr());
        if (result == nullptr)
            throw py::error_already_set();
        return result;
    });
}

// RedirectLoopError when the accepted connection is a proxy's upstream
// coming back (wfpredirect/_loops.py): its peer is an open upstream of this
// process, or it carries the configured loop mark. Only asks the registry
// while an upstream is open or the mark says so; the message is the
// facade's (_loops.loop_error), built only when raised.
void check_not_looped(const core::ConnectionState& state, const char* function) {
    if (!state.has_peer)
        return;
    const std::uint32_t loop_mark = configured_marks().loop_mark;
    const bool marked = loop_mark != 0 && state.has_mark && (state.mark & loop_mark) == loop_mark;
    if (!marked && !any_open_upstream())
        return;
    const bool ours = is_open_upstream(state.peer);
    if (!ours && !marked)
        return;
    // Imported on first use (_loops imports this module), and kept: two
    // threads that both import it keep one of the two references.
    static std::atomic<PyObject*> loop_error_function{nullptr};
    PyObject* loop_error = loop_error_function.load();
    if (loop_error == nullptr) {
        const py::module_ loops = py::module_::import("wfpredirect._loops");
        loop_error = py::object(loops.attr("loop_error")).release().ptr();
        PyObject* expected = nullptr;
        if (!loop_error_function.compare_exchange_strong(expected, loop_error)) {
            Py_DECREF(loop_error);
            loop_error = expected;
        }
    }
    const py::object peer = to_address_tuple(state.peer);
    const py::object exception = py::reinterpret_steal<py::object>(
        PyObject_CallFunction(loop_error, "OOs", peer.ptr(), ours ? Py_True : Py_False, function));
    if (!exception)
        throw py::error_already_set();
    PyErr_SetObject(reinterpret_cast<PyObject*>(Py_TYPE(exception.ptr())), exception.ptr());
    throw py::error_already_set();
}

// query_redirect_info(sock, listening_addresses=()): the public function
// itself (wfpredirect/_info.py re-exports it): the one pass, the loop check
// (not for an integer handle), the listener rule, then the first failure.
PyObject* query_redirect_info(PyObject*, PyObject* const* args, Py_ssize_t nargs,
                              PyObject* kwnames) {
    return call_guarded([args, nargs, kwnames] {
        constexpr const char* kName = "query_redirect_info";
        static const char* const kNames[] = {"sock", "listening_addresses"};
        PyObject* values[] = {nullptr, nullptr};
        bind_arguments(kName, args, static_cast<std::size_t>(nargs), kwnames, kNames, values, 2, 1);
        PyObject* sock = values[0];
        const core::SocketHandle handle = to_socket_handle(sock, kName);
        core::ConnectionState state;
        resolve_state(handle, state);
        if (!PyLong_Check(sock))
            check_not_looped(state, kName);
        py::object destination = py::none();
        if (state.has_original_destination) {
            destination = to_address_tuple(state.original_destination);
            // A failure after the original destination was known does not
            // count for a listener's own address: the single queries never
            // got that far.
            if (values[1] != nullptr &&
                is_listener_address(values[1], destination.ptr(), state.original_destination.port))
                return not_redirected().release().ptr();
        }
        // Named after this call: the caller made no single query.
        if (!state.failure.ok())
            throw_status(kName, state.failure);
        return state_info(state, std::move(destination)).release().ptr();
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
    {"query_redirect_info", fastcall(&query_redirect_info), METH_FASTCALL | METH_KEYWORDS,
     "query_redirect_info($module, sock, listening_addresses=())\n--\n\n"
     "query_redirect_info(sock: socket | int, listening_addresses: "
     "Sequence[tuple[str, int] | tuple[str, int, int, int]] = ()) -> RedirectInfo\n\n"
     "The whole redirect state of accepted connection `sock` (any accepted\n"
     "socket, or ``writer.get_extra_info(\"socket\")`` of an asyncio\n"
     "transport), by the rules RedirectSocket and wfpredirect.aio apply.\n\n"
     "Each field is None when absent; a connection that was not redirected\n"
     "gives ``RedirectInfo(None, None, None)``. A connection addressed to one\n"
     "of the proxy's own `listening_addresses` (every connection on a TPROXY\n"
     "listener looks redirected) counts as not redirected. An original\n"
     "destination that cannot be known (Windows without SO_ORIGINAL_DST, a\n"
     "driver whose context is not WFPSampler's) is None while the records and\n"
     "context still travel. Any other failure raises, as the single queries\n"
     "do: RedirectError naming the query that failed (original_destination,\n"
     "query_redirect_records or query_redirect_context), with the OS code. A\n"
     "connection that is one of this process's own upstream connections\n"
     "(create_upstream, open_upstream) coming back raises RedirectLoopError,\n"
     "saying what the redirect lacks.\n\n"
     "One native pass makes the fewest system calls the answer needs (Linux:\n"
     "getsockname, SO_ORIGINAL_DST, getpeername and SO_MARK; Windows: each WFP\n"
     "query once), where the three single queries would each resolve the\n"
     "redirect again."},
    {"_set_upstream_records", fastcall(&set_upstream_records), METH_FASTCALL,
     "_set_upstream_records($module, sock, records, loop_mark, mark_mask, /)\n--\n\n"
     "Private: set_redirect_records on a socket the library has just made itself "
     "(wfpredirect/_upstream.py), without the check of its state."},
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
