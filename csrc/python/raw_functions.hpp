// Plain CPython functions (METH_O, METH_FASTCALL) on the pybind11 module, for
// the calls that sit in a proxy's accept path. pybind11's generic dispatch
// (an argument tuple, per-call vectors, the overload loop) costs as much as
// the work around the system calls; benchmarks/bench_calls.py measures both.
#pragma once

#include <cstddef>
#include <exception>
#include <new>

#include <pybind11/pybind11.h>

namespace wfpredirect::python {

namespace py = pybind11;

// Runs a binding body that reports Python errors by throwing (errors.hpp)
// and returns a new reference; a C++ exception must not reach the
// interpreter, so each one becomes the Python error it carries.
template <typename Body> PyObject* call_guarded(Body&& body) noexcept {
    try {
        return body();
    } catch (py::error_already_set& error) {
        error.restore();
    } catch (const std::bad_alloc&) {
        PyErr_NoMemory();
    } catch (const std::exception& error) {
        PyErr_SetString(PyExc_RuntimeError, error.what());
    }
    return nullptr;
}

// Adds the function `definition` describes to `module`. CPython keeps the
// pointer: `definition` must have static storage. Its ml_doc starts with a
// text signature ("name($module, sock, /)\n--\n\n") so that inspect and
// stubtest see the parameters.
void add_raw_function(py::module_& module, PyMethodDef& definition);

// A TypeError unless nargs is within [minimum, maximum], worded as
// CPython's own positional-only functions word it.
void check_positional(const char* function, std::size_t nargs, std::size_t minimum,
                      std::size_t maximum);

// Binds keyword-only arguments of a METH_FASTCALL | METH_KEYWORDS call:
// values[i] is the value passed for names[i], left unchanged when absent.
// An unknown keyword is a TypeError.
void bind_keywords(const char* function, PyObject* const* args, std::size_t nargs,
                   PyObject* kwnames, const char* const* names, PyObject** values,
                   std::size_t count);

// Binds the arguments of a METH_FASTCALL | METH_KEYWORDS call to a function
// whose `count` parameters `names` may each be given by position or by
// keyword, the first `required` of them required: values[i] is the value
// for names[i], left unchanged when absent. The TypeErrors are worded as
// CPython words them for a Python function.
void bind_arguments(const char* function, PyObject* const* args, std::size_t nargs,
                    PyObject* kwnames, const char* const* names, PyObject** values,
                    std::size_t count, std::size_t required);

// A METH_FASTCALL body for a function of `minimum` to `maximum` positional
// arguments: `body(args, nargs)` returns a py::object (or py::none()).
template <typename Body>
PyObject* positional_call(const char* function, PyObject* const* args, Py_ssize_t nargs,
                          std::size_t minimum, std::size_t maximum, Body&& body) noexcept {
    return call_guarded([&] {
        check_positional(function, static_cast<std::size_t>(nargs), minimum, maximum);
        return py::object(body(args, static_cast<std::size_t>(nargs))).release().ptr();
    });
}

// `definition`'s function pointer for a METH_FASTCALL (| METH_KEYWORDS) function.
template <typename Function> PyCFunction fastcall(Function* function) {
    return reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(function));
}

} // namespace wfpredirect::python
