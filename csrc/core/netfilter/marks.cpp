#include "marks.hpp"

#include <cinttypes>
#include <cstdio>

namespace wfpredirect::core::netfilter {
namespace {

bool blank(char c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

int digit_value(char c, unsigned base) {
    int value = -1;
    if (c >= '0' && c <= '9')
        value = c - '0';
    else if (base == 16 && c >= 'a' && c <= 'f')
        value = c - 'a' + 10;
    else if (base == 16 && c >= 'A' && c <= 'F')
        value = c - 'A' + 10;
    return value;
}

// The text quoted for a problem: between single quotes, with backslashes,
// quotes and unprintable bytes escaped.
std::string quoted(const char* text) {
    std::string out = "'";
    for (const char* c = text; *c != '\0'; ++c) {
        const auto byte = static_cast<unsigned char>(*c);
        if (byte == '\\' || byte == '\'') {
            out += '\\';
            out += *c;
        } else if (byte < 0x20 || byte >= 0x7F) {
            char escape[5];
            std::snprintf(escape, sizeof escape, "\\x%02x", byte);
            out += escape;
        } else {
            out += *c;
        }
    }
    return out + "'";
}

std::string variable_problem(const char* variable, const char* text, MarkSyntax syntax) {
    return std::string(variable) + "=" + quoted(text) + " " + mark_syntax_problem(syntax);
}

// How a problem names a mark whose value came from its variable or default.
constexpr const char* kLoopMarkSetting = "WFPREDIRECT_LOOP_MARK (LOOP_MARK)";
constexpr const char* kMarkMaskSetting = "WFPREDIRECT_MARK_MASK (MARK_MASK)";

// Why (loop_mark, mark_mask) cannot work; empty when they can.
std::string pair_problem(std::uint32_t loop_mark, const char* loop_name, std::uint32_t mark_mask,
                         const char* mask_name) {
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

// Written once by configure_process_marks, during `import wfpredirect`.
struct ProcessMarks {
    MarkVariables variables;
    std::string error;
    MarkConfig config{kDefaultLoopMark, kDefaultMarkMask, nullptr};
};

ProcessMarks process;

} // namespace

MarkSyntax parse_mark(const char* text, std::size_t size, std::uint32_t& value) {
    std::size_t begin = 0;
    std::size_t end = size;
    while (begin < end && blank(text[begin]))
        ++begin;
    while (end > begin && blank(text[end - 1]))
        --end;
    unsigned base = 10;
    if (end - begin > 2 && text[begin] == '0' &&
        (text[begin + 1] == 'x' || text[begin + 1] == 'X')) {
        base = 16;
        begin += 2;
    }
    if (begin == end)
        return MarkSyntax::not_a_number;
    std::uint64_t number = 0;
    bool too_large = false;
    for (std::size_t i = begin; i < end; ++i) {
        const int digit = digit_value(text[i], base);
        if (digit < 0)
            return MarkSyntax::not_a_number;
        number = number * base + static_cast<unsigned>(digit);
        if (number > UINT32_MAX) {
            too_large = true;
            number = UINT32_MAX; // keeps reading: a later non-digit still makes it not a number
        }
    }
    if (too_large)
        return MarkSyntax::out_of_range;
    value = static_cast<std::uint32_t>(number);
    return MarkSyntax::ok;
}

const char* mark_syntax_problem(MarkSyntax syntax) {
    switch (syntax) {
    case MarkSyntax::ok:
        return nullptr;
    case MarkSyntax::not_a_number:
        return "is not a decimal or 0x-hex number";
    case MarkSyntax::out_of_range:
        return "is outside 0..0xffffffff";
    }
    return nullptr;
}

MarkVariables read_mark_variables(const char* loop_text, const char* mask_text) {
    MarkVariables variables;
    const struct {
        const char* variable;
        const char* text;
        std::uint32_t& value;
        std::string& problem;
    } settings[] = {
        {kLoopMarkVariable, loop_text, variables.loop_mark, variables.loop_problem},
        {kMarkMaskVariable, mask_text, variables.mark_mask, variables.mask_problem},
    };
    for (const auto& setting : settings) {
        if (setting.text == nullptr)
            continue;
        const std::string text = setting.text;
        if (text.find_first_not_of(" \t\n\r\f\v") == std::string::npos)
            continue; // blank: unset
        std::uint32_t value = 0;
        const MarkSyntax syntax = parse_mark(text.data(), text.size(), value);
        if (syntax == MarkSyntax::ok)
            setting.value = value;
        else
            setting.problem = variable_problem(setting.variable, setting.text, syntax);
    }
    return variables;
}

MarkConfig resolve_marks(const MarkVariables& variables, const MarkOverride& loop,
                         const MarkOverride& mask, std::string& storage) {
    MarkConfig config;
    config.loop_mark = loop.given ? loop.value : variables.loop_mark;
    config.mark_mask = mask.given ? mask.value : variables.mark_mask;
    if (!loop.given && !variables.loop_problem.empty())
        storage = variables.loop_problem;
    else if (!mask.given && !variables.mask_problem.empty())
        storage = variables.mask_problem;
    else
        storage = pair_problem(config.loop_mark, loop.given ? loop.name : kLoopMarkSetting,
                               config.mark_mask, mask.given ? mask.name : kMarkMaskSetting);
    config.error = storage.empty() ? nullptr : storage.c_str();
    return config;
}

void configure_process_marks(const MarkVariables& variables) {
    process.variables = variables;
    process.config = resolve_marks(process.variables, {}, {}, process.error);
}

const MarkVariables& process_mark_variables() { return process.variables; }

const MarkConfig& process_marks() { return process.config; }

} // namespace wfpredirect::core::netfilter
