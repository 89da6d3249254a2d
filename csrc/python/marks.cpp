#include "marks.hpp"

#include <cinttypes>
#include <cstdio>
#include <optional>

#include "errors.hpp"

namespace wfpredirect::python {
namespace {

// Written once, by _configure_marks during `import wfpredirect`, before any
// operation can run; only read afterwards.
struct MarkSettings {
    core::MarkConfig config;
    std::string loop_error; // why WFPREDIRECT_LOOP_MARK could not be used
    std::string mask_error; // why WFPREDIRECT_MARK_MASK could not be used
    std::string error;      // the first problem of the configuration as a whole
};

MarkSettings settings;

// Why (loop_mark, mark_mask) cannot work, named after where each came from;
// empty when they can.
std::string combination_problem(std::uint32_t loop_mark, const char* loop_name,
                                std::uint32_t mark_mask, const char* mask_name) {
    char text[256];
    if (loop_mark == 0) {
        std::snprintf(text, sizeof text,
                      "%s is 0: the loop mark must be non-zero, or the upstream connection is "
                      "redirected back into the proxy",
                      loop_name);
        return text;
    }
    if ((loop_mark & ~mark_mask) != 0) {
        std::snprintf(text, sizeof text,
                      "%s 0x%" PRIx32 " is not inside %s 0x%" PRIx32
                      ": the loop mark must only use bits of the mark mask",
                      loop_name, loop_mark, mask_name, mark_mask);
        return text;
    }
    return {};
}

std::optional<std::uint32_t> keyword_mark(PyObject* value, const char* name, const char* function) {
    if (value == Py_None)
        return std::nullopt;
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
    return static_cast<std::uint32_t>(mark);
}

void configure_marks(std::uint32_t loop_mark, std::uint32_t mark_mask, std::string loop_error,
                     std::string mask_error) {
    settings.loop_error = std::move(loop_error);
    settings.mask_error = std::move(mask_error);
    if (!settings.loop_error.empty())
        settings.error = settings.loop_error;
    else if (!settings.mask_error.empty())
        settings.error = settings.mask_error;
    else
        settings.error = combination_problem(loop_mark, "WFPREDIRECT_LOOP_MARK (LOOP_MARK)",
                                             mark_mask, "WFPREDIRECT_MARK_MASK (MARK_MASK)");
    settings.config.loop_mark = loop_mark;
    settings.config.mark_mask = mark_mask;
    settings.config.error = settings.error.empty() ? nullptr : settings.error.c_str();
}

} // namespace

const core::MarkConfig& configured_marks() { return settings.config; }

core::MarkConfig marks_for_call(PyObject* loop_mark, PyObject* mark_mask, const char* function,
                                std::string& error_storage) {
    const std::optional<std::uint32_t> loop = keyword_mark(loop_mark, "loop_mark", function);
    const std::optional<std::uint32_t> mask = keyword_mark(mark_mask, "mark_mask", function);
    if (!loop && !mask)
        return settings.config;

    core::MarkConfig config;
    config.loop_mark = loop.value_or(settings.config.loop_mark);
    config.mark_mask = mask.value_or(settings.config.mark_mask);
    if (!loop && !settings.loop_error.empty())
        error_storage = settings.loop_error;
    else if (!mask && !settings.mask_error.empty())
        error_storage = settings.mask_error;
    else
        error_storage = combination_problem(
            config.loop_mark, loop ? "loop_mark" : "WFPREDIRECT_LOOP_MARK (LOOP_MARK)",
            config.mark_mask, mask ? "mark_mask" : "WFPREDIRECT_MARK_MASK (MARK_MASK)");
    config.error = error_storage.empty() ? nullptr : error_storage.c_str();
    return config;
}

void init_marks(py::module_& module) {
    module.def("_configure_marks", &configure_marks, py::arg("loop_mark"), py::arg("mark_mask"),
               py::arg("loop_error"), py::arg("mask_error"),
               "Private: set the netfilter marks once, at import (wfpredirect/_marks.py).");
    module.def(
        "_marks_problem",
        [](std::uint32_t loop_mark, const std::string& loop_name, std::uint32_t mark_mask,
           const std::string& mask_name) {
            return combination_problem(loop_mark, loop_name.c_str(), mark_mask, mask_name.c_str());
        },
        py::arg("loop_mark"), py::arg("loop_name"), py::arg("mark_mask"), py::arg("mask_name"),
        "Private: why this loop mark and mask cannot work, named as given; \"\" when they "
        "can. The rule every netfilter call applies.");
}

} // namespace wfpredirect::python
