#include "control_messages.hpp"

#include <cstring>

namespace wfpredirect::core {
namespace {

// Field offsets inside the header: length, then level, then type.
constexpr std::size_t kLevelOffset = sizeof(std::size_t);
constexpr std::size_t kTypeOffset = kLevelOffset + sizeof(int);

} // namespace

std::size_t append_control_message(std::uint8_t* buffer, std::size_t capacity, std::size_t offset,
                                   int level, int type, const std::uint8_t* data,
                                   std::size_t size) {
    if (offset > capacity || size > capacity || control_space(size) > capacity - offset)
        return 0;
    std::uint8_t* message = buffer + offset;
    const std::size_t length = control_length(size);
    std::memset(message, 0, control_space(size));
    std::memcpy(message, &length, sizeof length);
    std::memcpy(message + kLevelOffset, &level, sizeof level);
    std::memcpy(message + kTypeOffset, &type, sizeof type);
    if (size != 0)
        std::memcpy(message + kControlHeaderSize, data, size);
    return offset + control_space(size);
}

bool ControlMessageReader::next(ControlMessage& out) {
    if (malformed_ || offset_ >= length_ || length_ - offset_ < kControlHeaderSize)
        return false;
    const std::uint8_t* message = buffer_ + offset_;
    std::size_t length;
    std::memcpy(&length, message, sizeof length);
    if (length < kControlHeaderSize || length > length_ - offset_) {
        malformed_ = true;
        return false;
    }
    std::memcpy(&out.level, message + kLevelOffset, sizeof out.level);
    std::memcpy(&out.type, message + kTypeOffset, sizeof out.type);
    out.data = message + kControlHeaderSize;
    out.size = length - kControlHeaderSize;
    // The last message may end without its padding.
    const std::size_t advance = control_align(length);
    offset_ = advance > length_ - offset_ ? length_ : offset_ + advance;
    return true;
}

} // namespace wfpredirect::core
