#include "scripted_stack.hpp"

#include <algorithm>
#include <cstring>
#include <string>

#include "../../csrc/core/common/byte_buffer.hpp"
#include "../../csrc/core/common/wfpsampler_context.hpp"
#include "../../csrc/core/wfp/connections.hpp"
#include "../../csrc/core/wfp/constants.hpp"

namespace wfpredirect::tests {
namespace {

using core::kMaxQuerySize;
using core::wfp::WinsockAnswer;
namespace wfp = core::wfp;

// Filled into a too-small output buffer: a stack may write there before it
// refuses, and the core must neither trust nor overflow it.
constexpr std::uint8_t kScribble = 0xA5;

// The first argument the core got wrong, or nullptr.
const char* invalid_ioctl_argument(std::uintptr_t socket, std::uint32_t code, const void* in,
                                   std::uint32_t in_size, const void* out, std::uint32_t out_size,
                                   const void* overlapped) {
    if (socket != kScriptedSocket)
        return "ioctl: wrong socket handle";
    if (overlapped != nullptr)
        return "ioctl: OVERLAPPED is not NULL";
    if (code == wfp::kSioSetRedirectRecords) {
        if (in == nullptr || in_size == 0 || in_size > kMaxQuerySize)
            return "set records: the record is not the input buffer";
        if (out != nullptr || out_size != 0)
            return "set records: an output buffer was passed";
        return nullptr;
    }
    if (code != wfp::kSioQueryRedirectRecords && code != wfp::kSioQueryRedirectContext)
        return "ioctl: unknown control code";
    if (in != nullptr || in_size != 0)
        return "query: an input buffer was passed";
    if (out == nullptr || out_size < wfp::kMinQueryOutputSize || out_size > kMaxQuerySize)
        return "query: output buffer missing or sized outside [4, 64 KiB]";
    return nullptr;
}

void check_argument(Checks& checks, const char* problem, const char* what) {
    checks.record(problem == nullptr, problem != nullptr ? problem : what, __FILE__, __LINE__);
}

std::uint32_t reported_size(const Refusal& refusal, std::size_t required) {
    switch (refusal.reported) {
    case ReportedSize::required:
        return static_cast<std::uint32_t>(required);
    case ReportedSize::one:
        return 1;
    default:
        return 0;
    }
}

WinsockAnswer failed(std::uint32_t error, std::uint32_t bytes = 0) {
    return {kSocketError, error, bytes};
}

WinsockAnswer answer_set(ScriptedStack& stack, const void* in, std::uint32_t in_size) {
    if (stack.set_error != 0)
        return failed(stack.set_error);
    const auto* bytes = static_cast<const std::uint8_t*>(in);
    stack.set_records.assign(bytes, bytes + in_size);
    return {0, 0, 0};
}

WinsockAnswer answer_query(ScriptedStack& stack, std::uint32_t code, void* out,
                           std::uint32_t out_size) {
    const auto& held = code == wfp::kSioQueryRedirectRecords ? stack.records : stack.context;
    if (!held)
        return failed(stack.not_found_error);
    if (held->size() > out_size) {
        std::memset(out, kScribble, out_size);
        return failed(stack.refusal.error, reported_size(stack.refusal, held->size()));
    }
    std::memcpy(out, held->data(), held->size());
    return {0, 0, static_cast<std::uint32_t>(held->size())};
}

WinsockAnswer scripted_ioctl(void* context, std::uintptr_t socket, std::uint32_t code,
                             const void* in, std::uint32_t in_size, void* out,
                             std::uint32_t out_size, void* overlapped) {
    auto& stack = *static_cast<ScriptedStack*>(context);
    stack.ioctl_calls.push_back({code, out_size});
    stack.calls.push_back(
        code == wfp::kSioQueryRedirectRecords   ? "records " + std::to_string(out_size)
        : code == wfp::kSioQueryRedirectContext ? "context " + std::to_string(out_size)
                                                : std::string("set records"));
    const char* problem =
        invalid_ioctl_argument(socket, code, in, in_size, out, out_size, overlapped);
    check_argument(stack.checks, problem, "ioctl arguments are valid");
    if (problem != nullptr)
        return failed(wfp::kWsaEfault);
    if (stack.forced_answer)
        return *stack.forced_answer;
    if (code == wfp::kSioSetRedirectRecords)
        return answer_set(stack, in, in_size);
    const std::uint32_t error =
        code == wfp::kSioQueryRedirectRecords ? stack.records_error : stack.context_error;
    if (error != 0)
        return failed(error);
    return answer_query(stack, code, out, out_size);
}

// Copies a scripted address the way getsockname/getsockopt do.
WinsockAnswer answer_address(const std::vector<std::uint8_t>& address, std::uint32_t error,
                             void* out) {
    if (address.empty())
        return failed(error);
    std::memcpy(out, address.data(), address.size());
    return {0, 0, static_cast<std::uint32_t>(address.size())};
}

// SO_ACCEPTCONN, SO_PROTOCOL_INFOW and IPV6_V6ONLY, as a set and the
// datagram calls ask them.
WinsockAnswer answer_datagram_option(ScriptedStack& stack, std::uintptr_t socket, int level,
                                     int name, void* out, std::uint32_t out_size) {
    if (level == wfp::kWindowsSolSocket && name == wfp::kWindowsSoAcceptconn) {
        const bool valid =
            socket == kScriptedSocket && out != nullptr && out_size == sizeof stack.listening;
        check_argument(stack.checks, valid ? nullptr : "SO_ACCEPTCONN: invalid arguments",
                       "SO_ACCEPTCONN arguments are valid");
        std::memcpy(out, &stack.listening, sizeof stack.listening);
        return {0, 0, sizeof stack.listening};
    }
    if (level == wfp::kWindowsSolSocket) {
        const bool valid = socket == kScriptedSocket && name == wfp::kWindowsSoProtocolInfoW &&
                           out != nullptr && out_size == wfp::kWindowsProtocolInfoSize;
        check_argument(stack.checks, valid ? nullptr : "SO_PROTOCOL_INFOW: invalid arguments",
                       "SO_PROTOCOL_INFOW arguments are valid");
        std::memset(out, kScribble, out_size);
        const int family = stack.family;
        std::memcpy(static_cast<std::uint8_t*>(out) + wfp::kWindowsProtocolInfoFamilyOffset,
                    &family, sizeof family);
        return {0, 0, out_size};
    }
    const bool valid = socket == kScriptedSocket && name == wfp::kWindowsIpv6V6only &&
                       out != nullptr && out_size == sizeof stack.v6only;
    check_argument(stack.checks, valid ? nullptr : "IPV6_V6ONLY: invalid arguments",
                   "IPV6_V6ONLY arguments are valid");
    std::memcpy(out, &stack.v6only, sizeof stack.v6only);
    return {0, 0, sizeof stack.v6only};
}

WinsockAnswer scripted_getsockopt(void* context, std::uintptr_t socket, int level, int name,
                                  void* out, std::uint32_t out_size) {
    auto& stack = *static_cast<ScriptedStack*>(context);
    stack.getsockopt_levels.push_back(level);
    const bool datagram_option =
        level == wfp::kWindowsSolSocket || level == wfp::kWindowsIpprotoIpv6;
    stack.calls.push_back(datagram_option ? "getsockopt" : "SO_ORIGINAL_DST");
    if (datagram_option)
        return answer_datagram_option(stack, socket, level, name, out, out_size);
    const bool valid = socket == kScriptedSocket && name == wfp::kWindowsSoOriginalDst &&
                       (level == wfp::kWindowsSolIp || level == wfp::kWindowsSolIpv6) &&
                       out != nullptr && out_size == wfp::kWindowsSockaddrStorageSize;
    check_argument(stack.checks, valid ? nullptr : "getsockopt: invalid arguments",
                   "getsockopt arguments are valid");
    return answer_address(stack.original_dst, stack.original_dst_error, out);
}

WinsockAnswer scripted_getsockname(void* context, std::uintptr_t socket, void* out,
                                   std::uint32_t out_size) {
    auto& stack = *static_cast<ScriptedStack*>(context);
    stack.calls.push_back("getsockname");
    const bool valid =
        socket == kScriptedSocket && out != nullptr && out_size == wfp::kWindowsSockaddrStorageSize;
    check_argument(stack.checks, valid ? nullptr : "getsockname: invalid arguments",
                   "getsockname arguments are valid");
    return answer_address(stack.local_address, wfp::kWsaEinval, out);
}

WinsockAnswer scripted_getpeername(void* context, std::uintptr_t socket, void* out,
                                   std::uint32_t out_size) {
    auto& stack = *static_cast<ScriptedStack*>(context);
    stack.calls.push_back("getpeername");
    const bool valid =
        socket == kScriptedSocket && out != nullptr && out_size == wfp::kWindowsSockaddrStorageSize;
    check_argument(stack.checks, valid ? nullptr : "getpeername: invalid arguments",
                   "getpeername arguments are valid");
    return answer_address(stack.peer_address, wfp::kWsaEnotconn, out);
}

WinsockAnswer scripted_setsockopt(void* context, std::uintptr_t socket, int level, int name,
                                  const void* value, std::uint32_t size) {
    auto& stack = *static_cast<ScriptedStack*>(context);
    stack.options_set.emplace_back(level, name);
    std::uint32_t on = 0;
    if (value != nullptr && size == sizeof on)
        std::memcpy(&on, value, sizeof on);
    const bool valid = socket == kScriptedSocket &&
                       (level == wfp::kWindowsIpprotoIp || level == wfp::kWindowsIpprotoIpv6) &&
                       (name == wfp::kIpWfpRedirectRecords || name == wfp::kIpWfpRedirectContext) &&
                       size == sizeof on && on == 1;
    check_argument(stack.checks, valid ? nullptr : "setsockopt: invalid arguments",
                   "setsockopt arguments are valid");
    if (stack.setsockopt_error != 0)
        return failed(stack.setsockopt_error);
    return {0, 0, 0};
}

WinsockAnswer scripted_recvmsg(void* context, std::uintptr_t socket,
                               core::wfp::MessageBuffers& message) {
    auto& stack = *static_cast<ScriptedStack*>(context);
    stack.recvmsg_capacity = message.data_size;
    const bool valid = socket == kScriptedSocket && message.name != nullptr &&
                       message.name_size == wfp::kWindowsSockaddrStorageSize &&
                       (message.data != nullptr || message.data_size == 0) &&
                       message.control != nullptr && message.control_size >= core::kMaxQuerySize &&
                       message.flags == 0;
    check_argument(stack.checks, valid ? nullptr : "recvmsg: invalid arguments",
                   "recvmsg arguments are valid");
    if (stack.recvmsg_error != 0)
        return failed(stack.recvmsg_error);
    // A datagram longer than the buffer: what fits is written, and the call
    // fails with WSAEMSGSIZE (Microsoft's WSARecvMsg page; Wine does the same).
    const bool too_long = stack.datagram.size() > message.data_size;
    const std::size_t data_size = std::min<std::size_t>(stack.datagram.size(), message.data_size);
    const std::size_t control_size =
        std::min<std::size_t>(stack.control.size(), message.control_size);
    if (data_size != 0)
        std::memcpy(message.data, stack.datagram.data(), data_size);
    std::memcpy(message.name, stack.source_name.data(), stack.source_name.size());
    if (control_size != 0)
        std::memcpy(message.control, stack.control.data(), control_size);
    message.name_size = static_cast<std::uint32_t>(stack.source_name.size());
    message.control_size = static_cast<std::uint32_t>(control_size);
    message.flags = stack.recvmsg_flags;
    if (too_long)
        return {-1, wfp::kWsaEmsgsize, static_cast<std::uint32_t>(data_size)};
    return {0, 0, static_cast<std::uint32_t>(data_size)};
}

WinsockAnswer scripted_sendmsg(void* context, std::uintptr_t socket,
                               const core::wfp::MessageBuffers& message) {
    auto& stack = *static_cast<ScriptedStack*>(context);
    ++stack.sendmsg_calls;
    const bool valid = socket == kScriptedSocket && message.name != nullptr &&
                       (message.name_size == wfp::kWindowsSockaddrInSize ||
                        message.name_size == wfp::kWindowsSockaddrIn6Size) &&
                       (message.data != nullptr || message.data_size == 0) &&
                       (message.control != nullptr) == (message.control_size != 0) &&
                       message.flags == 0;
    check_argument(stack.checks, valid ? nullptr : "sendmsg: invalid arguments",
                   "sendmsg arguments are valid");
    const auto* name = static_cast<const std::uint8_t*>(message.name);
    stack.sent_name.assign(name, name + message.name_size);
    stack.sent_data.assign(message.data, message.data + message.data_size);
    stack.sent_control.assign(message.control, message.control + message.control_size);
    if (stack.sendmsg_error != 0)
        return failed(stack.sendmsg_error);
    return {0, 0, message.data_size};
}

} // namespace

core::wfp::WinsockOps ScriptedStack::ops() {
    return {this,
            &scripted_ioctl,
            &scripted_getsockopt,
            &scripted_getsockname,
            &scripted_getpeername,
            &scripted_setsockopt,
            &scripted_recvmsg,
            &scripted_sendmsg};
}

} // namespace wfpredirect::tests
