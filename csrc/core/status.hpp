// The plain result every core operation returns. No Python here: the glue
// (csrc/python) is the only place that turns a Status into an exception.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace wfpredirect::core {

// What kind of answer an operation produced. The glue maps each kind to one
// exception class (docs/design.md, "Errors: one table for both backends").
enum class Outcome : std::uint8_t {
    ok,
    os_error,          // RedirectError
    not_redirected,    // NotRedirectedError
    buffer_too_small,  // BufferTooSmallError; Status::size holds the required size
    unsupported,       // UnsupportedError
    permission_denied, // RedirectPermissionError
    invalid_argument,  // ValueError (bad records, invalid mark configuration)
    would_block,       // BlockingIOError: a non-blocking socket has nothing now
    timed_out,         // TimeoutError: the caller's timeout passed first
    interrupted,       // EINTR: the glue runs signal handlers, then retries
};

// Why a call failed, or what a check found, in words, kept apart from the
// call itself. A predicate reads after the call ("needs administrator
// rights"); a clause follows it after a colon, or stands alone when there is
// no call ("the socket is listening: ...").
struct Explanation {
    const char* text = nullptr;
    bool clause = false;
};

constexpr Explanation predicate(const char* text) { return {text, false}; }
constexpr Explanation clause(const char* text) { return {text, true}; }

struct Status {
    Outcome outcome = Outcome::ok;
    // The raw OS code: errno on POSIX, the Winsock/Win32 code on Windows,
    // kept as an unsigned 32-bit number (FWP_E_NOT_FOUND is 0x80320008).
    std::uint32_t code = 0;
    // The failing system call, as "getsockopt(SO_MARK)", a static string;
    // null on success and for a check that made no call.
    const char* call = nullptr;
    // Bytes written on success; the required size for buffer_too_small.
    std::size_t size = 0;
    // What went wrong beyond the call's name, when there is more to say.
    Explanation explanation;

    bool ok() const { return outcome == Outcome::ok; }

    static Status success(std::size_t bytes) { return {Outcome::ok, 0, nullptr, bytes, {}}; }
    static Status failure(Outcome outcome, std::uint32_t code, const char* call,
                          Explanation explanation = {}) {
        return {outcome, code, call, 0, explanation};
    }
    // A check that made no system call: the explanation alone.
    static Status refusal(Outcome outcome, std::uint32_t code, const char* explanation) {
        return {outcome, code, nullptr, 0, clause(explanation)};
    }
    static Status too_small(std::uint32_t code, const char* call, std::size_t required,
                            Explanation explanation = {}) {
        return {Outcome::buffer_too_small, code, call, required, explanation};
    }

    // The call and the explanation as one text: "call", "call predicate",
    // "call: clause" or "clause".
    std::string text() const {
        std::string out = call != nullptr ? call : "";
        if (explanation.text != nullptr) {
            if (!out.empty())
                out += explanation.clause ? ": " : " ";
            out += explanation.text;
        }
        return out;
    }
};

} // namespace wfpredirect::core
