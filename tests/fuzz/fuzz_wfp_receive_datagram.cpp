// The Windows receive path (wfp::receive_datagram) against a WSARecvMsg
// played from the fuzz input: arbitrary source address, control messages,
// flags, and byte counts that may lie about what was written. The core must
// read and write only inside its buffers and hand back records and context
// that lie inside its storage.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "../../csrc/core/common/wfpsampler_context.hpp"
#include "../../csrc/core/wfp/datagrams.hpp"
#include "fuzz_check.hpp"

using namespace wfpredirect::core;
namespace wfp = wfpredirect::core::wfp;

namespace {

// The input, consumed from the front.
struct Input {
    const std::uint8_t* data;
    std::size_t size;

    std::uint32_t u32() {
        std::uint32_t value = 0;
        const std::size_t taken = std::min(size, sizeof value);
        std::memcpy(&value, data, taken);
        data += taken;
        size -= taken;
        return value;
    }
    // Up to `wanted` bytes.
    std::size_t take(std::size_t wanted, const std::uint8_t*& out) {
        const std::size_t taken = std::min(size, wanted);
        out = data;
        data += taken;
        size -= taken;
        return taken;
    }
};

wfp::WinsockAnswer unexpected_call() { std::abort(); }

wfp::WinsockAnswer fuzzed_recvmsg(void* context, std::uintptr_t, wfp::MessageBuffers& message) {
    Input& input = *static_cast<Input*>(context);
    const std::uint32_t flags = input.u32();
    const std::uint32_t reported_bytes = input.u32();
    const std::uint32_t reported_name = input.u32() % 512;
    const std::uint32_t reported_control = input.u32();
    const std::uint32_t fails = input.u32();
    if (fails % 16 == 0)
        return {-1, fails >> 4, 0};
    // Write only what the buffers hold, as a real stack does...
    const std::uint8_t* name;
    const std::size_t name_size = input.take(message.name_size, name);
    std::memcpy(message.name, name, name_size);
    const std::uint8_t* control;
    const std::size_t control_size = input.take(message.control_size, control);
    std::memcpy(message.control, control, control_size);
    if (message.data_size != 0)
        std::memset(message.data, 'D', std::min<std::uint32_t>(message.data_size, 64));
    // ...but report anything, lies included.
    message.flags = flags;
    message.name_size = reported_name;
    message.control_size =
        reported_control % 4 == 0 ? static_cast<std::uint32_t>(control_size) : reported_control;
    return {0, 0,
            reported_bytes % 4 == 0 ? std::min<std::uint32_t>(message.data_size, 64)
                                    : reported_bytes};
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    Input input{data, size};
    const std::size_t capacity = input.u32() % 128;
    std::vector<std::uint8_t> buffer(capacity);
    const wfp::WinsockOps ops{
        &input,
        [](void*, std::uintptr_t, std::uint32_t, const void*, std::uint32_t, void*, std::uint32_t,
           void*) { return unexpected_call(); },
        [](void*, std::uintptr_t, int, int, void*, std::uint32_t) { return unexpected_call(); },
        [](void*, std::uintptr_t, void*, std::uint32_t) { return unexpected_call(); },
        [](void*, std::uintptr_t, void*, std::uint32_t) { return unexpected_call(); },
        [](void*, std::uintptr_t, int, int, const void*, std::uint32_t) {
            return unexpected_call();
        },
        &fuzzed_recvmsg,
        [](void*, std::uintptr_t, const wfp::MessageBuffers&) { return unexpected_call(); },
    };
    ReceivedDatagram out;
    const Status status = wfp::receive_datagram(ops, 1, buffer.data(), capacity, out);
    if (!status.ok()) {
        FUZZ_REQUIRE(!status.text().empty());
        return 0;
    }
    FUZZ_REQUIRE(status.size == out.size && out.size <= capacity);
    const std::uint8_t* storage = out.storage.data();
    const std::uint8_t* storage_end = storage + wfp::kDatagramControlSize;
    if (out.records != nullptr)
        FUZZ_REQUIRE(out.records >= storage && out.records_size != 0 &&
                     out.records_size <= static_cast<std::size_t>(storage_end - out.records));
    if (out.context != nullptr)
        FUZZ_REQUIRE(out.context >= storage && out.context_size != 0 &&
                     out.context_size <= static_cast<std::size_t>(storage_end - out.context));
    if (out.has_original_destination)
        FUZZ_REQUIRE(out.context_size == wfp::kWfpSamplerContextSize);
    return 0;
}
