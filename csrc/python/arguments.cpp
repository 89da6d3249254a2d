#include "arguments.hpp"

#include <string>

#include "errors.hpp"

namespace wfpredirect::python {
namespace {

[[noreturn]] void throw_type_error(const char* function, const std::string& message,
                                   PyObject* object) {
    const std::string text = message + ", not " + Py_TYPE(object)->tp_name;
    throw_error(PyExc_TypeError, function, text.c_str());
}

core::SocketHandle handle_from_integer(PyObject* number, const char* function) {
    const long long value = PyLong_AsLongLong(number);
    if (value == -1 && PyErr_Occurred()) {
        PyErr_Clear();
        throw_error(PyExc_OverflowError, function, "the socket handle is out of range");
    }
    core::SocketHandle handle;
    if (!core::socket_handle_from_integer(value, handle))
        throw_error(PyExc_OverflowError, function, "the socket handle is out of range");
    return handle;
}

// Why a buffer was refused, asked only after the writable request failed.
[[noreturn]] void explain_unwritable(PyObject* buffer, const char* function) {
    Py_buffer view;
    if (PyObject_GetBuffer(buffer, &view, PyBUF_FULL_RO) != 0) {
        PyErr_Clear();
        throw_type_error(function, "the buffer must be a writable bytes-like object", buffer);
    }
    const bool readonly = view.readonly != 0;
    PyBuffer_Release(&view);
    if (readonly)
        throw_type_error(function, "the buffer must be writable (read-only buffer given)", buffer);
    throw_type_error(function, "the buffer must be C-contiguous (strided buffer given)", buffer);
}

// What sock.fileno() raised (the current exception), as the call `function`
// reports it: an OSError as it is (it has the OS code), anything else a
// TypeError naming the call, chained from what fileno() raised.
[[noreturn]] void throw_fileno_failed(const char* function) {
    if (PyErr_ExceptionMatches(PyExc_OSError))
        throw py::error_already_set();
    py::error_already_set raised;
    const std::string text = std::string(function) + ": sock.fileno() raised " +
                             py::str(raised.type().attr("__name__")).cast<std::string>() + ": " +
                             py::str(raised.value()).cast<std::string>();
    py::raise_from(raised, PyExc_TypeError, text.c_str());
    throw py::error_already_set();
}

} // namespace

core::SocketHandle to_socket_handle(PyObject* sock, const char* function) {
    if (PyLong_Check(sock)) {
        if (PyBool_Check(sock))
            throw_type_error(function, "sock must be a socket or an integer handle", sock);
        return handle_from_integer(sock, function);
    }
    // Interned once: building the name for each call costs as much as the
    // lookup itself.
    static PyObject* const fileno_name = PyUnicode_InternFromString("fileno");
    if (fileno_name == nullptr)
        throw py::error_already_set();
    // A method call: the method is looked up and called without the bound
    // method object an attribute lookup makes.
    PyObject* call[] = {sock};
    py::object number = py::reinterpret_steal<py::object>(
        PyObject_VectorcallMethod(fileno_name, call, 1 | PY_VECTORCALL_ARGUMENTS_OFFSET, nullptr));
    if (!number) {
        if (!PyErr_ExceptionMatches(PyExc_AttributeError))
            throw_fileno_failed(function);
        // No fileno at all is a TypeError; an AttributeError that fileno()
        // itself raised is what fileno() raised.
        py::error_already_set raised;
        PyObject* method = PyObject_GetAttr(sock, fileno_name);
        if (method == nullptr) {
            if (!PyErr_ExceptionMatches(PyExc_AttributeError))
                throw py::error_already_set();
            PyErr_Clear();
            throw_type_error(function, "sock must be a socket or an integer handle", sock);
        }
        Py_DECREF(method);
        raised.restore();
        throw_fileno_failed(function);
    }
    if (!PyLong_Check(number.ptr()) || PyBool_Check(number.ptr()))
        throw_type_error(function, "sock.fileno() must return an integer", number.ptr());
    return handle_from_integer(number.ptr(), function);
}

HeldBuffer HeldBuffer::writable(PyObject* buffer, const char* function) {
    HeldBuffer held;
    if (PyObject_GetBuffer(buffer, &held.view_, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS) == 0)
        return held;
    if (!PyErr_ExceptionMatches(PyExc_BufferError) && !PyErr_ExceptionMatches(PyExc_TypeError))
        throw py::error_already_set();
    PyErr_Clear();
    explain_unwritable(buffer, function);
}

HeldBuffer HeldBuffer::readable(PyObject* buffer, const char* function, const char* what) {
    HeldBuffer held;
    if (PyObject_GetBuffer(buffer, &held.view_, PyBUF_C_CONTIGUOUS) == 0)
        return held;
    if (!PyErr_ExceptionMatches(PyExc_BufferError) && !PyErr_ExceptionMatches(PyExc_TypeError))
        throw py::error_already_set();
    PyErr_Clear();
    if (PyObject_CheckBuffer(buffer))
        throw_type_error(function, std::string(what) + " must be a C-contiguous bytes-like object",
                         buffer);
    throw_type_error(function, std::string(what) + " must be a bytes-like object", buffer);
}

} // namespace wfpredirect::python
