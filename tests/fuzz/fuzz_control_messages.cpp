// ControlMessageReader on an arbitrary control buffer (what a kernel or a
// hostile layered provider could hand back): every message it yields lies
// inside the buffer, a malformed buffer stays malformed, and the messages
// rebuilt with append_control_message read back the same.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#include "../../csrc/core/common/control_messages.hpp"
#include "fuzz_check.hpp"

using namespace wfpredirect::core;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    ControlMessageReader reader(data, size);
    std::vector<ControlMessage> messages;
    ControlMessage message;
    while (reader.next(message)) {
        FUZZ_REQUIRE(message.data >= data + kControlHeaderSize);
        FUZZ_REQUIRE(message.data <= data + size);
        FUZZ_REQUIRE(message.size <= static_cast<std::size_t>(data + size - message.data));
        messages.push_back(message);
        // Each message takes at least a header.
        FUZZ_REQUIRE(messages.size() <= size / kControlHeaderSize);
    }
    if (reader.malformed())
        FUZZ_REQUIRE(!reader.next(message));

    std::size_t needed = 0;
    for (const ControlMessage& each : messages)
        needed += control_space(each.size);
    std::vector<std::uint8_t> rebuilt(needed);
    std::size_t offset = 0;
    for (const ControlMessage& each : messages) {
        offset = append_control_message(rebuilt.data(), rebuilt.size(), offset, each.level,
                                        each.type, each.data, each.size);
        FUZZ_REQUIRE(offset != 0);
    }
    FUZZ_REQUIRE(offset == needed);
    ControlMessageReader again(rebuilt.data(), rebuilt.size());
    for (const ControlMessage& each : messages) {
        FUZZ_REQUIRE(again.next(message));
        FUZZ_REQUIRE(message.level == each.level && message.type == each.type);
        FUZZ_REQUIRE(message.size == each.size);
        FUZZ_REQUIRE(each.size == 0 || std::memcmp(message.data, each.data, each.size) == 0);
    }
    FUZZ_REQUIRE(!again.next(message) && !again.malformed());
    // A message that does not fit writes nothing and says so.
    if (!messages.empty() && needed > 0) {
        FUZZ_REQUIRE(append_control_message(rebuilt.data(), needed - 1, 0, 0, 0, messages[0].data,
                                            needed) == 0);
    }
    return 0;
}
