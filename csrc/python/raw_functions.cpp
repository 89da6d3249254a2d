#include "raw_functions.hpp"

namespace wfpredirect::python {

void add_raw_function(py::module_& module, PyMethodDef& definition) {
    py::object name = module.attr("__name__");
    py::object function =
        py::reinterpret_steal<py::object>(PyCFunction_NewEx(&definition, module.ptr(), name.ptr()));
    if (!function)
        throw py::error_already_set();
    module.attr(definition.ml_name) = function;
}

void check_positional(const char* function, std::size_t nargs, std::size_t minimum,
                      std::size_t maximum) {
    if (nargs >= minimum && nargs <= maximum)
        return;
    const char* bound = minimum == maximum ? "exactly "
                        : nargs < minimum  ? "at least "
                                           : "at most ";
    const std::size_t expected = nargs < minimum ? minimum : maximum;
    PyErr_Format(PyExc_TypeError, "%s() takes %s%zu positional argument%s (%zu given)", function,
                 bound, expected, expected == 1 ? "" : "s", nargs);
    throw py::error_already_set();
}

namespace {

// Which of `names` keyword argument `keyword` is; TypeError when none.
std::size_t keyword_index(const char* function, PyObject* keyword, const char* const* names,
                          std::size_t count) {
    std::size_t which = 0;
    while (which < count && PyUnicode_CompareWithASCIIString(keyword, names[which]) != 0)
        ++which;
    if (which == count) {
        PyErr_Format(PyExc_TypeError, "%s() got an unexpected keyword argument '%U'", function,
                     keyword);
        throw py::error_already_set();
    }
    return which;
}

} // namespace

void bind_keywords(const char* function, PyObject* const* args, std::size_t nargs,
                   PyObject* kwnames, const char* const* names, PyObject** values,
                   std::size_t count) {
    if (kwnames == nullptr)
        return;
    const Py_ssize_t given = PyTuple_GET_SIZE(kwnames);
    for (Py_ssize_t i = 0; i < given; ++i) {
        const std::size_t which =
            keyword_index(function, PyTuple_GET_ITEM(kwnames, i), names, count);
        values[which] = args[nargs + static_cast<std::size_t>(i)];
    }
}

void bind_arguments(const char* function, PyObject* const* args, std::size_t nargs,
                    PyObject* kwnames, const char* const* names, PyObject** values,
                    std::size_t count, std::size_t required) {
    if (nargs > count) {
        PyErr_Format(PyExc_TypeError,
                     "%s() takes from %zu to %zu positional arguments but %zu were given", function,
                     required, count, nargs);
        throw py::error_already_set();
    }
    for (std::size_t i = 0; i < nargs; ++i)
        values[i] = args[i];
    const Py_ssize_t given = kwnames == nullptr ? 0 : PyTuple_GET_SIZE(kwnames);
    for (Py_ssize_t i = 0; i < given; ++i) {
        const std::size_t which =
            keyword_index(function, PyTuple_GET_ITEM(kwnames, i), names, count);
        if (values[which] != nullptr) {
            PyErr_Format(PyExc_TypeError, "%s() got multiple values for argument '%s'", function,
                         names[which]);
            throw py::error_already_set();
        }
        values[which] = args[nargs + static_cast<std::size_t>(i)];
    }
    for (std::size_t i = 0; i < required; ++i) {
        if (values[i] == nullptr) {
            PyErr_Format(PyExc_TypeError, "%s() missing 1 required positional argument: '%s'",
                         function, names[i]);
            throw py::error_already_set();
        }
    }
}

} // namespace wfpredirect::python
