// A WFP stack played behind wfp::WinsockOps. It checks every argument the
// core passes (handle, code, which buffer is in and which is out, sizes, no
// OVERLAPPED) and logs each call, so tests assert the exact probe sequence.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "../../csrc/core/wfp/winsock_ops.hpp"
#include "checks.hpp"

namespace wfpredirect::tests {

// The handle the core must pass through untouched; pointer-sized on purpose.
constexpr std::uintptr_t kScriptedSocket = 0x7FFF00001234u;

// The value of a failing Winsock call (SOCKET_ERROR).
constexpr int kSocketError = -1;

// What the stack puts in lpcbBytesReturned when a buffer is too small.
enum class ReportedSize { required, zero, one };

// One way of saying "the buffer is too small" (docs/design.md lists them all).
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

    // When not 0, every records (or context) query fails with this code.
    std::uint32_t records_error = 0;
    std::uint32_t context_error = 0;

    std::vector<IoctlCall> ioctl_calls;
    std::vector<int> getsockopt_levels;
    // Every call of the connection ops in order, as "records 1024" and
    // "context 1024" (a query IOCTL and its output size), "set records",
    // "getsockname", "SO_ORIGINAL_DST", "getpeername" or "getsockopt".
    std::vector<std::string> calls;

    // What a set checks first: SO_ACCEPTCONN, and getpeername's answer
    // (Windows layout; empty fails with WSAENOTCONN, a new socket).
    std::uint32_t listening = 0;
    std::vector<std::uint8_t> peer_address;

    // Datagrams. The socket's family (SO_PROTOCOL_INFOW) and IPV6_V6ONLY.
    std::uint16_t family = 2;
    std::uint32_t v6only = 0;
    // setsockopt answers this error (0: success) and logs (level, name).
    std::uint32_t setsockopt_error = 0;
    std::vector<std::pair<int, int>> options_set;
    // What WSARecvMsg delivers: an error, or the data, source name (Windows
    // layout), control bytes and flags, each copied into the core's buffers.
    std::uint32_t recvmsg_error = 0;
    std::vector<std::uint8_t> datagram;
    std::vector<std::uint8_t> source_name;
    std::vector<std::uint8_t> control;
    std::uint32_t recvmsg_flags = 0;
    std::uint32_t recvmsg_capacity = 0; // the data buffer size the core gave
    // What WSASendMsg received, byte for byte; sendmsg_error fails it.
    std::uint32_t sendmsg_error = 0;
    std::vector<std::uint8_t> sent_name;
    std::vector<std::uint8_t> sent_data;
    std::vector<std::uint8_t> sent_control;
    int sendmsg_calls = 0;
};

} // namespace wfpredirect::tests
