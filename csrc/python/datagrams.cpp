// The datagram calls. Unlike the connection queries they can block (a
// blocking socket waits for a datagram), so they always run without the
// interpreter lock, and they honour the socket object's timeout the way the
// socket module does: poll for at most the remaining time, retry after a
// signal handler that did not raise (PEP 475).
#include "datagrams.hpp"

#include <chrono>
#include <climits>
#include <cmath>
#include <optional>
#include <string>

#include "../core/operations.hpp"
#if defined(__linux__)
#include "../core/netfilter/reply_socket.hpp"
#endif
#include "arguments.hpp"
#include "conversions.hpp"
#include "errors.hpp"
#include "marks.hpp"
#include "raw_functions.hpp"

namespace wfpredirect::python {
namespace {

using Clock = std::chrono::steady_clock;

// The socket object's timeout in seconds: negative for none (blocking, a
// plain descriptor, or non-blocking: each answers for itself).
double socket_timeout(PyObject* sock) {
    if (PyLong_Check(sock))
        return -1.0;
    py::object timeout = py::reinterpret_borrow<py::object>(sock);
    if (!py::hasattr(timeout, "gettimeout"))
        return -1.0;
    timeout = timeout.attr("gettimeout")();
    if (timeout.is_none())
        return -1.0;
    const double seconds = PyFloat_AsDouble(timeout.ptr());
    if (seconds == -1.0 && PyErr_Occurred())
        throw py::error_already_set();
    return seconds > 0.0 ? seconds : -1.0;
}

// Runs `attempt(timeout_ms)` without the interpreter lock until it is not
// interrupted, and not spuriously woken inside the caller's timeout.
template <typename Attempt>
core::Status run_datagram_call(PyObject* sock, const char* function, Attempt&& attempt) {
    const double timeout = socket_timeout(sock);
    const bool timed = timeout > 0.0;
    const Clock::time_point deadline =
        timed ? Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                   std::chrono::duration<double>(timeout))
              : Clock::time_point{};
    for (;;) {
        int timeout_ms = core::kNoWait;
        if (timed) {
            const double left =
                std::chrono::duration<double, std::milli>(deadline - Clock::now()).count();
            timeout_ms = left <= 0.0 ? 0 : left >= INT_MAX ? INT_MAX : int(std::ceil(left));
        }
        core::Status status;
        {
            py::gil_scoped_release unlocked;
            status = attempt(timeout_ms);
        }
        if (status.outcome == core::Outcome::interrupted) {
            if (PyErr_CheckSignals() != 0)
                throw py::error_already_set();
            continue;
        }
        // Ready, then nothing to read: another reader took it. Wait again.
        if (timed && status.outcome == core::Outcome::would_block)
            continue;
        if (!status.ok())
            throw_status(function, status);
        return status;
    }
}

py::object optional_address(bool present, const core::SocketAddress& address) {
    return present ? py::object(to_address_tuple(address)) : py::object(py::none());
}

py::object optional_records(const core::ReceivedDatagram& datagram) {
    if (datagram.records == nullptr)
        return py::none();
    return to_redirect_records(datagram.records, datagram.records_size);
}

py::object optional_context(const core::ReceivedDatagram& datagram) {
    if (datagram.context == nullptr)
        return py::none();
    return py::bytes(reinterpret_cast<const char*>(datagram.context), datagram.context_size);
}

void enable_datagram_records(py::handle sock) {
    constexpr const char* kName = "enable_datagram_records";
    const core::SocketHandle handle = to_socket_handle(sock.ptr(), kName);
    core::Status status;
    {
        py::gil_scoped_release unlocked;
        status = core::enable_datagram_records(handle);
    }
    if (!status.ok())
        throw_status(kName, status);
}

py::object recvmsg_redirect(py::handle sock, py::handle bufsize) {
    constexpr const char* kName = "recvmsg_redirect";
    const core::SocketHandle handle = to_socket_handle(sock.ptr(), kName);
    if (!PyIndex_Check(bufsize.ptr())) {
        const std::string text =
            std::string("bufsize must be an int, not ") + Py_TYPE(bufsize.ptr())->tp_name;
        throw_error(PyExc_TypeError, kName, text.c_str());
    }
    const Py_ssize_t size = PyNumber_AsSsize_t(bufsize.ptr(), PyExc_OverflowError);
    if (size == -1 && PyErr_Occurred()) {
        if (!PyErr_ExceptionMatches(PyExc_OverflowError))
            throw py::error_already_set();
        PyErr_Clear();
        throw_error(PyExc_OverflowError, kName, "bufsize is too large");
    }
    if (size < 0)
        throw_error(PyExc_ValueError, kName, "negative buffer size");
    PyObject* raw = PyBytes_FromStringAndSize(nullptr, size);
    if (raw == nullptr)
        throw py::error_already_set();
    py::object data = py::reinterpret_steal<py::object>(raw);
    auto* bytes = reinterpret_cast<std::uint8_t*>(PyBytes_AS_STRING(raw));
    core::ReceivedDatagram datagram;
    const core::MarkConfig& marks = configured_marks();
    run_datagram_call(sock.ptr(), kName, [&](int timeout_ms) {
        return core::receive_datagram(handle, bytes, static_cast<std::size_t>(size), timeout_ms,
                                      datagram, marks);
    });
    if (datagram.size != static_cast<std::size_t>(size)) {
        // Nobody else holds the new bytes object, so it may shrink in place.
        PyObject* shrunk = data.release().ptr();
        if (_PyBytes_Resize(&shrunk, static_cast<Py_ssize_t>(datagram.size)) != 0)
            throw py::error_already_set();
        data = py::reinterpret_steal<py::object>(shrunk);
    }
    return to_datagram(
        std::move(data), to_address_tuple(datagram.source), optional_records(datagram),
        optional_context(datagram),
        optional_address(datagram.has_original_destination, datagram.original_destination));
}

py::tuple recvmsg_redirect_into(py::handle sock, py::handle buffer) {
    constexpr const char* kName = "recvmsg_redirect_into";
    const core::SocketHandle handle = to_socket_handle(sock.ptr(), kName);
    const HeldBuffer out = HeldBuffer::writable(buffer.ptr(), kName);
    core::ReceivedDatagram datagram;
    const core::MarkConfig& marks = configured_marks();
    run_datagram_call(sock.ptr(), kName, [&](int timeout_ms) {
        return core::receive_datagram(handle, out.data(), out.size(), timeout_ms, datagram, marks);
    });
    return py::make_tuple(
        datagram.size, to_address_tuple(datagram.source), optional_records(datagram),
        optional_context(datagram),
        optional_address(datagram.has_original_destination, datagram.original_destination));
}

std::size_t sendmsg_redirect(py::handle sock, py::handle data, py::handle address,
                             py::handle records, py::handle loop_mark, py::handle mark_mask) {
    constexpr const char* kName = "sendmsg_redirect";
    const core::SocketHandle handle = to_socket_handle(sock.ptr(), kName);
    const HeldBuffer payload = HeldBuffer::readable(data.ptr(), kName, "data");
    const core::SocketAddress destination = to_socket_address(address.ptr(), kName);
    const std::uint8_t* record_data = nullptr;
    std::size_t record_size = 0;
    std::optional<HeldBuffer> record;
    if (!records.is_none()) {
        record.emplace(HeldBuffer::readable(records.ptr(), kName, "records"));
        if (record->size() == 0 || record->size() > core::kMaxQuerySize) {
            const std::string text = "records must be 1 to " + std::to_string(core::kMaxQuerySize) +
                                     " bytes, not " + std::to_string(record->size());
            throw_error(PyExc_ValueError, kName, text.c_str());
        }
        record_data = record->data();
        record_size = record->size();
    }
    std::string error_storage;
    const core::MarkConfig marks =
        marks_for_call(loop_mark.ptr(), mark_mask.ptr(), kName, error_storage);
    const core::Status status = run_datagram_call(sock.ptr(), kName, [&](int timeout_ms) {
        return core::send_datagram(handle, payload.data(), payload.size(), destination, record_data,
                                   record_size, timeout_ms, marks);
    });
    return status.size;
}

#if defined(__linux__)
// Availability: Linux (the netfilter backend's own operation).
void prepare_datagram_reply_socket(py::handle sock) {
    constexpr const char* kName = "datagram_reply_socket";
    const core::SocketHandle handle = to_socket_handle(sock.ptr(), kName);
    const core::Status status = core::netfilter::prepare_datagram_reply_socket(handle);
    if (!status.ok())
        throw_status(kName, status);
}
#endif

PyObject* enable_datagram_records_raw(PyObject*, PyObject* const* args, Py_ssize_t nargs) {
    return positional_call("enable_datagram_records", args, nargs, 1, 1,
                           [](PyObject* const* a, std::size_t) {
                               enable_datagram_records(a[0]);
                               return py::none();
                           });
}

PyObject* recvmsg_redirect_raw(PyObject*, PyObject* const* args, Py_ssize_t nargs) {
    return positional_call(
        "recvmsg_redirect", args, nargs, 2, 2,
        [](PyObject* const* a, std::size_t) { return recvmsg_redirect(a[0], a[1]); });
}

PyObject* recvmsg_redirect_into_raw(PyObject*, PyObject* const* args, Py_ssize_t nargs) {
    return positional_call(
        "recvmsg_redirect_into", args, nargs, 2, 2,
        [](PyObject* const* a, std::size_t) { return recvmsg_redirect_into(a[0], a[1]); });
}

PyObject* sendmsg_redirect_raw(PyObject*, PyObject* const* args, Py_ssize_t nargs,
                               PyObject* kwnames) {
    static constexpr const char* kName = "sendmsg_redirect";
    return positional_call(kName, args, nargs, 3, 4, [kwnames](PyObject* const* a, std::size_t n) {
        static const char* const kKeywords[] = {"loop_mark", "mark_mask"};
        PyObject* keywords[] = {Py_None, Py_None};
        bind_keywords(kName, a, n, kwnames, kKeywords, keywords, 2);
        return py::int_(
            sendmsg_redirect(a[0], a[1], a[2], n == 4 ? a[3] : Py_None, keywords[0], keywords[1]));
    });
}

#if defined(__linux__)
PyObject* prepare_datagram_reply_socket_raw(PyObject*, PyObject* const* args, Py_ssize_t nargs) {
    return positional_call("_prepare_datagram_reply_socket", args, nargs, 1, 1,
                           [](PyObject* const* a, std::size_t) {
                               prepare_datagram_reply_socket(a[0]);
                               return py::none();
                           });
}
#endif

// Positional-only arguments, keyword-only options, text signatures that
// match wfpredirect/_core.pyi.
PyMethodDef functions[] = {
    {"enable_datagram_records", fastcall(&enable_datagram_records_raw), METH_FASTCALL,
     "enable_datagram_records($module, sock, /)\n--\n\n"
     "enable_datagram_records(sock: socket | int, /) -> None\n\n"
     "Ask the kernel to deliver each datagram's redirect state with it (a UDP socket, before "
     "it receives)."},
    {"recvmsg_redirect", fastcall(&recvmsg_redirect_raw), METH_FASTCALL,
     "recvmsg_redirect($module, sock, bufsize, /)\n--\n\n"
     "recvmsg_redirect(sock: socket | int, bufsize: int, /) -> Datagram\n\n"
     "Receive one datagram: Datagram(data, address, records, context, original_destination)."},
    {"recvmsg_redirect_into", fastcall(&recvmsg_redirect_into_raw), METH_FASTCALL,
     "recvmsg_redirect_into($module, sock, buffer, /)\n--\n\n"
     "recvmsg_redirect_into(sock: socket | int, buffer: bytearray | memoryview, "
     "/) -> tuple[int, tuple[str, int] | tuple[str, int, int, int], "
     "RedirectRecords | None, bytes | None, tuple[str, int] | tuple[str, int, int, "
     "int] | None]\n\n"
     "Receive one datagram into `buffer`: (nbytes, address, records, context, "
     "original_destination)."},
    {"sendmsg_redirect", fastcall(&sendmsg_redirect_raw), METH_FASTCALL | METH_KEYWORDS,
     "sendmsg_redirect($module, sock, data, address, records=None, /, *, loop_mark=None, "
     "mark_mask=None)\n--\n\n"
     "sendmsg_redirect(sock: socket | int, data: bytes | bytearray | memoryview, "
     "address: tuple[str, int] | tuple[str, int, int, int], "
     "records: bytes | bytearray | memoryview | None = None, /, *, "
     "loop_mark: int | None = None, mark_mask: int | None = None) -> int\n\n"
     "Send one datagram to `address`, carrying `records` with it alone."},
};

#if defined(__linux__)
// The netfilter backend's own functions. Availability: Linux.
PyMethodDef linux_functions[] = {
    {"_prepare_datagram_reply_socket", fastcall(&prepare_datagram_reply_socket_raw), METH_FASTCALL,
     "_prepare_datagram_reply_socket($module, sock, /)\n--\n\n"
     "Private: ready a new UDP socket to bind to a datagram's original destination."},
};
#endif

} // namespace

void init_datagrams(py::module_& module) {
    for (PyMethodDef& definition : functions)
        add_raw_function(module, definition);
#if defined(__linux__)
    for (PyMethodDef& definition : linux_functions)
        add_raw_function(module, definition);
#endif
}

} // namespace wfpredirect::python
