// A WFP stack played behind wfp::WinsockOps. It checks every argument the
// core passes (handle, code, which buffer is in and which is out, sizes, no
// OVERLAPPED) and logs each call, so tests assert the exact probe sequence.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <vector>

#include "../../csrc/core/windows/wfp_probe.hpp"
#include "checks.hpp"

namespace wfpredirect::tests {

// The handle the core must pass through untouched; pointer-sized on purpose.
constexpr std::uintptr_t kScriptedSocket = 0x7FFF00001234u;

// The value of a failing Winsock call (SOCKET_ERROR).
constexpr int kSocketError = -1;

// What the stack puts in lpcbBytesReturned when a buffer is too small.
enum class ReportedSize { required, zero, one };

// One way of saying "the buffer is too small" (DESIGN.md lists them all).
struct Refusal {
    std::uint32_t error;
    ReportedSize reported;
    const char* name;
};

struct IoctlCall {
    std::uint32_t code;
    std::uint32_t out_size;
};

struct ScriptedStack {
    explicit ScriptedStack(Checks& checks) : checks(checks) {}

    // The table the core is given; its context is this stack.
    core::wfp::WinsockOps ops();

    Checks& checks;

    // What the connection carries; absent answers not_found_error, 0 bytes.
    std::optional<std::vector<std::uint8_t>> records;
    std::optional<std::vector<std::uint8_t>> context;
    std::uint32_t not_found_error = 0;
    Refusal refusal{};
    // When set, every IOCTL answers this, whatever it asks.
    std::optional<core::wfp::WinsockAnswer> forced_answer;

    std::uint32_t set_error = 0;           // 0: set records succeeds
    std::vector<std::uint8_t> set_records; // what a successful set received

    // getsockname's and SO_ORIGINAL_DST's answers (Windows layout); empty
    // fails with original_dst_error.
    std::vector<std::uint8_t> local_address;
    std::vector<std::uint8_t> original_dst;
    std::uint32_t original_dst_error = 0;

    std::vector<IoctlCall> ioctl_calls;
    std::vector<int> getsockopt_levels;
};

} // namespace wfpredirect::tests
