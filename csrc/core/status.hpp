// The plain result every core operation returns. No Python here: the glue
// (csrc/python) is the only place that turns a Status into an exception.
#pragma once

#include <cstddef>
#include <cstdint>

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

struct Status {
    Outcome outcome = Outcome::ok;
    // The raw OS code: errno on POSIX, the Winsock/Win32 code on Windows,
    // kept as an unsigned 32-bit number (FWP_E_NOT_FOUND is 0x80320008).
    std::uint32_t code = 0;
    // The failing system call or check, a static string. Null on success.
    const char* call = nullptr;
    // Bytes written on success; the required size for buffer_too_small.
    std::size_t size = 0;

    bool ok() const { return outcome == Outcome::ok; }

    static Status success(std::size_t bytes) { return {Outcome::ok, 0, nullptr, bytes}; }
    static Status failure(Outcome outcome, std::uint32_t code, const char* call) {
        return {outcome, code, call, 0};
    }
    static Status too_small(std::uint32_t code, const char* call, std::size_t required) {
        return {Outcome::buffer_too_small, code, call, required};
    }
};

} // namespace wfpredirect::core
