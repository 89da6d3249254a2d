#include "scripted_stack.hpp"

#include <cstring>

#include "../../csrc/core/byte_buffer.hpp"
#include "../../csrc/core/wfp_constants.hpp"
#include "../../csrc/core/wfpsampler_context.hpp"

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
    const char* problem =
        invalid_ioctl_argument(socket, code, in, in_size, out, out_size, overlapped);
    check_argument(stack.checks, problem, "ioctl arguments are valid");
    if (problem != nullptr)
        return failed(wfp::kWsaEfault);
    if (stack.forced_answer)
        return *stack.forced_answer;
    if (code == wfp::kSioSetRedirectRecords)
        return answer_set(stack, in, in_size);
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

WinsockAnswer scripted_getsockopt(void* context, std::uintptr_t socket, int level, int name,
                                  void* out, std::uint32_t out_size) {
    auto& stack = *static_cast<ScriptedStack*>(context);
    stack.getsockopt_levels.push_back(level);
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
    const bool valid =
        socket == kScriptedSocket && out != nullptr && out_size == wfp::kWindowsSockaddrStorageSize;
    check_argument(stack.checks, valid ? nullptr : "getsockname: invalid arguments",
                   "getsockname arguments are valid");
    return answer_address(stack.local_address, wfp::kWsaEinval, out);
}

} // namespace

core::wfp::WinsockOps ScriptedStack::ops() {
    return {this, &scripted_ioctl, &scripted_getsockopt, &scripted_getsockname};
}

} // namespace wfpredirect::tests
