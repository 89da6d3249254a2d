#include "marks.hpp"

#include <optional>
#include <tuple>

#include "../core/netfilter/marks.hpp"
#include "errors.hpp"

namespace wfpredirect::python {
namespace {

namespace marks = core::netfilter;

// A keyword's or flag's value: None, or an int (not a bool) of 0..0xffffffff.
marks::MarkOverride to_override(PyObject* value, const char* name, const char* function) {
    marks::MarkOverride result;
    result.name = name;
    if (value == Py_None)
        return result;
    if (!PyLong_Check(value) || PyBool_Check(value)) {
        const std::string text = std::string(name) + " must be an int or None";
        throw_error(PyExc_TypeError, function, text.c_str());
    }
    const unsigned long long mark = PyLong_AsUnsignedLongLong(value);
    if ((mark == static_cast<unsigned long long>(-1) && PyErr_Occurred()) || mark > UINT32_MAX) {
        PyErr_Clear();
        const std::string text = std::string(name) + " must be between 0 and 0xffffffff";
        throw_error(PyExc_ValueError, function, text.c_str());
    }
    result.given = true;
    result.value = static_cast<std::uint32_t>(mark);
    return result;
}

// A variable's text: None (unset) or a str.
std::optional<std::string> variable_text(py::handle text) {
    if (text.is_none())
        return std::nullopt;
    return text.cast<std::string>();
}

void configure_marks(py::handle loop_text, py::handle mask_text) {
    const std::optional<std::string> loop = variable_text(loop_text);
    const std::optional<std::string> mask = variable_text(mask_text);
    marks::configure_process_marks(
        marks::read_mark_variables(loop ? loop->c_str() : nullptr, mask ? mask->c_str() : nullptr));
}

std::tuple<std::uint32_t, std::uint32_t, std::string> resolve_marks(py::handle loop_mark,
                                                                    py::handle mark_mask,
                                                                    const std::string& loop_name,
                                                                    const std::string& mask_name) {
    constexpr const char* kName = "_resolve_marks";
    const marks::MarkOverride loop = to_override(loop_mark.ptr(), loop_name.c_str(), kName);
    const marks::MarkOverride mask = to_override(mark_mask.ptr(), mask_name.c_str(), kName);
    std::string problem;
    const core::MarkConfig config =
        marks::resolve_marks(marks::process_mark_variables(), loop, mask, problem);
    return {config.loop_mark, config.mark_mask, problem};
}

std::uint32_t parse_mark(const std::string& text) {
    std::uint32_t value = 0;
    const marks::MarkSyntax syntax = marks::parse_mark(text.data(), text.size(), value);
    if (syntax != marks::MarkSyntax::ok) {
        const std::string problem =
            py::repr(py::str(text)).cast<std::string>() + " " + marks::mark_syntax_problem(syntax);
        throw py::value_error(problem);
    }
    return value;
}

} // namespace

const core::MarkConfig& configured_marks() { return marks::process_marks(); }

core::MarkConfig marks_for_call(PyObject* loop_mark, PyObject* mark_mask, const char* function,
                                std::string& error_storage) {
    const marks::MarkOverride loop = to_override(loop_mark, "loop_mark", function);
    const marks::MarkOverride mask = to_override(mark_mask, "mark_mask", function);
    if (!loop.given && !mask.given)
        return marks::process_marks();
    return marks::resolve_marks(marks::process_mark_variables(), loop, mask, error_storage);
}

void init_marks(py::module_& module) {
    module.attr("DEFAULT_LOOP_MARK") = marks::kDefaultLoopMark;
    module.attr("DEFAULT_MARK_MASK") = marks::kDefaultMarkMask;
    module.attr("LOOP_MARK_VARIABLE") = marks::kLoopMarkVariable;
    module.attr("MARK_MASK_VARIABLE") = marks::kMarkMaskVariable;
    module.def("_configure_marks", &configure_marks, py::arg("loop_text"), py::arg("mask_text"),
               "Private: the process's marks from the two variables' texts (None when unset), "
               "once, at import (wfpredirect/_marks.py).");
    module.def("_resolve_marks", &resolve_marks, py::arg("loop_mark"), py::arg("mark_mask"),
               py::arg("loop_name"), py::arg("mask_name"),
               "Private: (loop_mark, mark_mask, problem) for these overrides (None keeps the "
               "configured value), named as given; problem is \"\" when they can work. The rule "
               "every netfilter call applies.");
    module.def("_parse_mark", &parse_mark, py::arg("text"),
               "Private: a mark written as text (decimal or 0x-hex); ValueError otherwise.");
}

} // namespace wfpredirect::python
