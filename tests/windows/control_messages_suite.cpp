// append_control_message and ControlMessageReader on crafted buffers: the
// layout byte by byte, several messages, a message that does not fit,
// lengths that are too short or overrun the buffer, an unpadded last message.
#include <cstring>
#include <vector>

#include "../../csrc/core/common/control_messages.hpp"
#include "suites.hpp"

namespace wfpredirect::tests {
namespace {

using core::control_length;
using core::control_space;
using core::ControlMessage;
using core::ControlMessageReader;
using core::kControlHeaderSize;

constexpr std::uint8_t kGuard = 0xCC;

// One message laid out independently of the builder: size_t length, int
// level, int type, data, zero padding to sizeof(size_t).
std::vector<std::uint8_t> laid_out(int level, int type, const std::vector<std::uint8_t>& data,
                                   bool padded = true) {
    const std::size_t header = sizeof(std::size_t) + 2 * sizeof(int);
    const std::size_t length = header + data.size();
    std::size_t total = length;
    if (padded)
        total = (length + sizeof(std::size_t) - 1) / sizeof(std::size_t) * sizeof(std::size_t);
    std::vector<std::uint8_t> out(total, 0);
    std::memcpy(out.data(), &length, sizeof length);
    std::memcpy(out.data() + sizeof(std::size_t), &level, sizeof level);
    std::memcpy(out.data() + sizeof(std::size_t) + sizeof(int), &type, sizeof type);
    if (!data.empty())
        std::memcpy(out.data() + header, data.data(), data.size());
    return out;
}

bool is_message(const ControlMessage& message, int level, int type,
                const std::vector<std::uint8_t>& data) {
    return message.level == level && message.type == type && message.size == data.size() &&
           (data.empty() || std::memcmp(message.data, data.data(), data.size()) == 0);
}

void layout(Checks& checks) {
    checks.scenario = "control message layout";
    CHECK(checks, kControlHeaderSize == (sizeof(std::size_t) == 8 ? 16u : 12u));
    CHECK(checks, control_length(5) == kControlHeaderSize + 5);
    CHECK(checks, control_space(5) == kControlHeaderSize + sizeof(std::size_t));
    CHECK(checks, control_space(0) == kControlHeaderSize);

    const std::vector<std::uint8_t> first{1, 2, 3, 4, 5};
    const std::vector<std::uint8_t> second(38, 0x5A);
    std::vector<std::uint8_t> buffer(256, kGuard);
    std::size_t offset =
        core::append_control_message(buffer.data(), 200, 0, 0, 60, first.data(), first.size());
    CHECK(checks, offset == control_space(first.size()));
    offset = core::append_control_message(buffer.data(), 200, offset, 41, 70, second.data(),
                                          second.size());
    CHECK(checks, offset == control_space(first.size()) + control_space(second.size()));
    std::vector<std::uint8_t> expected = laid_out(0, 60, first);
    const std::vector<std::uint8_t> tail = laid_out(41, 70, second);
    expected.insert(expected.end(), tail.begin(), tail.end());
    CHECK(checks, std::memcmp(buffer.data(), expected.data(), expected.size()) == 0);
    bool guards = true;
    for (std::size_t i = offset; i < buffer.size(); ++i)
        guards = guards && buffer[i] == kGuard;
    CHECK(checks, guards);

    ControlMessageReader reader(buffer.data(), offset);
    ControlMessage message;
    CHECK(checks, reader.next(message) && is_message(message, 0, 60, first));
    CHECK(checks, reader.next(message) && is_message(message, 41, 70, second));
    CHECK(checks, !reader.next(message));
    CHECK(checks, !reader.malformed());
}

void does_not_fit(Checks& checks) {
    checks.scenario = "a message that does not fit is not written";
    const std::vector<std::uint8_t> data(20, 7);
    std::vector<std::uint8_t> buffer(64, kGuard);
    const std::size_t need = control_space(data.size());
    CHECK(checks, core::append_control_message(buffer.data(), need - 1, 0, 0, 60, data.data(),
                                               data.size()) == 0);
    CHECK(checks, core::append_control_message(buffer.data(), need + 8, 9, 0, 60, data.data(),
                                               data.size()) == 0);
    CHECK(checks, core::append_control_message(buffer.data(), 8, 16, 0, 60, data.data(), 0) == 0);
    bool untouched = true;
    for (std::uint8_t byte : buffer)
        untouched = untouched && byte == kGuard;
    CHECK(checks, untouched);
    CHECK(checks, core::append_control_message(buffer.data(), need, 0, 0, 60, data.data(),
                                               data.size()) == need);
}

void malformed(Checks& checks) {
    const std::vector<std::uint8_t> data{9, 9, 9, 9};
    checks.scenario = "a length overrunning the buffer";
    std::vector<std::uint8_t> overrun = laid_out(0, 60, data);
    const std::size_t too_long = overrun.size() + 1;
    std::memcpy(overrun.data(), &too_long, sizeof too_long);
    ControlMessageReader reader(overrun.data(), overrun.size());
    ControlMessage message;
    CHECK(checks, !reader.next(message));
    CHECK(checks, reader.malformed());
    CHECK(checks, !reader.next(message));

    checks.scenario = "a length shorter than the header";
    std::vector<std::uint8_t> short_length = laid_out(0, 60, data);
    const std::size_t too_short = kControlHeaderSize - 1;
    std::memcpy(short_length.data(), &too_short, sizeof too_short);
    ControlMessageReader short_reader(short_length.data(), short_length.size());
    CHECK(checks, !short_reader.next(message));
    CHECK(checks, short_reader.malformed());

    checks.scenario = "a good message, then a bad one";
    std::vector<std::uint8_t> mixed = laid_out(0, 60, data);
    std::vector<std::uint8_t> bad = laid_out(0, 70, data);
    const std::size_t huge = 1u << 20;
    std::memcpy(bad.data(), &huge, sizeof huge);
    mixed.insert(mixed.end(), bad.begin(), bad.end());
    ControlMessageReader mixed_reader(mixed.data(), mixed.size());
    CHECK(checks, mixed_reader.next(message) && is_message(message, 0, 60, data));
    CHECK(checks, !mixed_reader.next(message));
    CHECK(checks, mixed_reader.malformed());
}

void edges(Checks& checks) {
    const std::vector<std::uint8_t> data{1, 2, 3};
    ControlMessage message;
    checks.scenario = "the last message without its padding";
    std::vector<std::uint8_t> unpadded = laid_out(0, 60, data, false);
    ControlMessageReader reader(unpadded.data(), unpadded.size());
    CHECK(checks, reader.next(message) && is_message(message, 0, 60, data));
    CHECK(checks, !reader.next(message));
    CHECK(checks, !reader.malformed());

    checks.scenario = "trailing bytes shorter than a header end the walk";
    std::vector<std::uint8_t> trailing = laid_out(0, 60, data);
    trailing.resize(trailing.size() + kControlHeaderSize - 1, 0xEE);
    ControlMessageReader trailing_reader(trailing.data(), trailing.size());
    CHECK(checks, trailing_reader.next(message) && is_message(message, 0, 60, data));
    CHECK(checks, !trailing_reader.next(message));
    CHECK(checks, !trailing_reader.malformed());

    checks.scenario = "an empty control buffer";
    ControlMessageReader empty(nullptr, 0);
    CHECK(checks, !empty.next(message));
    CHECK(checks, !empty.malformed());

    checks.scenario = "a zero-length data message";
    std::vector<std::uint8_t> bare = laid_out(0, 99, {});
    ControlMessageReader bare_reader(bare.data(), bare.size());
    CHECK(checks, bare_reader.next(message) && is_message(message, 0, 99, {}));
    CHECK(checks, !bare_reader.next(message));
}

} // namespace

void run_control_messages_suite(Checks& checks) {
    layout(checks);
    does_not_fit(checks);
    malformed(checks);
    edges(checks);
}

} // namespace wfpredirect::tests
