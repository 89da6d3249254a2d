// The netfilter marks, the one home of their rule (docs/design.md, "Linux
// facts"): the defaults and the variables that override them, the grammar of
// a mark wherever it is written, the precedence of a keyword or flag over
// the variable over the default, the check of the pair, and the bits an
// inbound and an upstream connection carry.
//
// Portable (no system call), and compiled into every build: the facade's
// LOOP_MARK and MARK_MASK and the mark keywords mean the same on every
// platform; only the netfilter operations apply them.
#pragma once

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <string>

#include "../operations.hpp"

namespace wfpredirect::core::netfilter {

// The loop mark: set on every upstream connection, so that the rule `meta
// mark & 0x40 == 0x40 return` lets it pass instead of redirecting it back
// into the proxy.
constexpr std::uint32_t kDefaultLoopMark = 0x40;
// The bits of an inbound mark that travel in its records (four: a chain of
// up to four proxies, each with its own loop mark). It leaves out 0x1, the
// usual TPROXY routing mark, and kube-proxy's 0x4000 and 0x8000.
constexpr std::uint32_t kDefaultMarkMask = 0xF0;
constexpr const char* kLoopMarkVariable = "WFPREDIRECT_LOOP_MARK";
constexpr const char* kMarkMaskVariable = "WFPREDIRECT_MARK_MASK";

// The one grammar of a mark, in a variable or on a command line: optional
// blanks, then decimal digits or 0x (0X) and hex digits, then optional
// blanks; 0 to 0xffffffff. Nothing else: no sign, no other base, no digit
// separators (so "010" is ten and "0b1" is not a mark).
enum class MarkSyntax : std::uint8_t { ok, not_a_number, out_of_range };
MarkSyntax parse_mark(const char* text, std::size_t size, std::uint32_t& value);
// "is not a decimal or 0x-hex number", "is outside 0..0xffffffff"; null for ok.
const char* mark_syntax_problem(MarkSyntax syntax);

// What the two variables said, read once: a variable that is unset (or
// blank) leaves its default.
struct MarkVariables {
    std::uint32_t loop_mark = kDefaultLoopMark;
    std::uint32_t mark_mask = kDefaultMarkMask;
    std::string loop_problem; // why WFPREDIRECT_LOOP_MARK's text is not a mark
    std::string mask_problem; // why WFPREDIRECT_MARK_MASK's text is not a mark
};
// `loop_text` and `mask_text` are the variables' values, null when unset.
MarkVariables read_mark_variables(const char* loop_text, const char* mask_text);

// A keyword argument or a command-line flag for one mark.
struct MarkOverride {
    bool given = false;
    std::uint32_t value = 0;
    const char* name = nullptr; // as a problem names it: "loop_mark", "--loop-mark"
};

// The marks of one call: each override over its variable over the default.
// A variable's problem counts only where its value is used. The pair must
// have a non-zero loop mark inside the mask; the first problem (which names
// where each value came from) is kept in `storage` and pointed to by the
// result's `error`.
MarkConfig resolve_marks(const MarkVariables& variables, const MarkOverride& loop,
                         const MarkOverride& mask, std::string& storage);

// The process's marks, from the variables: set once at import, before any
// operation runs, and only read afterwards.
void configure_process_marks(const MarkVariables& variables);
const MarkVariables& process_mark_variables();
const MarkConfig& process_marks();

// The configuration's own problem, which every netfilter call reports.
inline Status check_marks(const MarkConfig& marks) {
    if (marks.error != nullptr)
        return Status::refusal(Outcome::invalid_argument, EINVAL, marks.error);
    return Status::success(0);
}

// The bits of an inbound connection's mark that travel in its records.
constexpr std::uint32_t travelling_bits(std::uint32_t inbound_mark, const MarkConfig& marks) {
    return inbound_mark & marks.mark_mask;
}

// The mark an upstream socket or datagram carries for a record's mark: its
// travelling bits (never other software's bits: a TPROXY routing mark or
// kube-proxy's could route the upstream back into the host) and the loop
// mark.
constexpr std::uint32_t upstream_mark_for(std::uint32_t record_mark, const MarkConfig& marks) {
    return travelling_bits(record_mark, marks) | marks.loop_mark;
}

} // namespace wfpredirect::core::netfilter
