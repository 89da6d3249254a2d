#include "errors.hpp"

#include <cerrno>
#include <string>

#include "../core/common/error_text.hpp"

namespace wfpredirect::python {
namespace {

// Strong references taken once at import and kept for the life of the
// process; never written again.
struct ErrorClasses {
    PyObject* redirect_error = nullptr;
    PyObject* not_redirected = nullptr;
    PyObject* buffer_too_small = nullptr;
    PyObject* unsupported = nullptr;
    PyObject* permission = nullptr;
};

ErrorClasses classes;

PyObject* class_for(core::Outcome outcome) {
    switch (outcome) {
    case core::Outcome::not_redirected:
        return classes.not_redirected;
    case core::Outcome::buffer_too_small:
        return classes.buffer_too_small;
    case core::Outcome::unsupported:
        return classes.unsupported;
    case core::Outcome::permission_denied:
        return classes.permission;
    case core::Outcome::would_block:
        return PyExc_BlockingIOError;
    case core::Outcome::timed_out:
        return PyExc_TimeoutError;
    case core::Outcome::interrupted:
        return PyExc_InterruptedError;
    default:
        return classes.redirect_error;
    }
}

// CPython reports a Winsock error's errno as the Winsock number itself and
// anything else from Windows as EINVAL (PC/errmap.h).
int errno_for(std::uint32_t code) {
    if (!core::kCodeIsWinerror)
        return static_cast<int>(code);
    constexpr std::uint32_t kFirstWinsockError = 10000;
    constexpr std::uint32_t kLastWinsockError = 11999;
    if (code >= kFirstWinsockError && code <= kLastWinsockError)
        return static_cast<int>(code);
    return EINVAL;
}

std::string message_for(const char* function, const core::Status& status, std::size_t capacity) {
    std::string message = function;
    message += ": ";
    switch (status.outcome) {
    case core::Outcome::not_redirected:
        message += "the connection was not redirected: ";
        message += status.text();
        return message;
    case core::Outcome::buffer_too_small:
        message += "the buffer holds " + std::to_string(capacity) + " bytes, the answer needs " +
                   std::to_string(status.size);
        return message;
    case core::Outcome::timed_out:
        // The socket module's words for a socket timeout.
        message += "timed out";
        return message;
    default:
        break;
    }
    char text[core::kErrorTextSize];
    core::describe_error(status.code, text);
    message += status.text();
    message += " (";
    message += text;
    message += ")";
    return message;
}

PyObject* import_class(const py::module_& errors, const char* name) {
    return py::object(errors.attr(name)).release().ptr();
}

} // namespace

void init_errors(py::module_&) {
    py::module_ errors = py::module_::import("wfpredirect._errors");
    classes.redirect_error = import_class(errors, "RedirectError");
    classes.not_redirected = import_class(errors, "NotRedirectedError");
    classes.buffer_too_small = import_class(errors, "BufferTooSmallError");
    classes.unsupported = import_class(errors, "UnsupportedError");
    classes.permission = import_class(errors, "RedirectPermissionError");
}

void throw_error(PyObject* type, const char* function, const char* message) {
    PyErr_Format(type, "%s: %s", function, message);
    throw py::error_already_set();
}

py::object status_exception(const char* function, const core::Status& status,
                            std::size_t capacity) {
    if (status.outcome == core::Outcome::invalid_argument) {
        const std::string message = std::string(function) + ": " + status.text();
        return py::reinterpret_borrow<py::object>(PyExc_ValueError)(message);
    }
    const std::string message = message_for(function, status, capacity);
    py::object exception = py::reinterpret_borrow<py::object>(class_for(status.outcome))(
        errno_for(status.code), message);
    if (core::kCodeIsWinerror)
        exception.attr("winerror") = status.code;
    if (status.outcome == core::Outcome::buffer_too_small)
        exception.attr("required") = status.size;
    return exception;
}

void throw_status(const char* function, const core::Status& status, std::size_t capacity) {
    if (status.outcome == core::Outcome::invalid_argument)
        throw_error(PyExc_ValueError, function, status.text().c_str());
    const py::object exception = status_exception(function, status, capacity);
    PyErr_SetObject(class_for(status.outcome), exception.ptr());
    throw py::error_already_set();
}

} // namespace wfpredirect::python
