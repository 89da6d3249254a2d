// Control messages (ancillary data) of recvmsg/sendmsg and
// WSARecvMsg/WSASendMsg, built and parsed portably so that both layouts are
// tested on crafted buffers everywhere.
//
// Linux's cmsghdr and Windows' WSACMSGHDR are the same shape:
//   { size_t length; int level; int type; } then the data,
// with headers and data aligned to sizeof(size_t): glibc's CMSG_ALIGN, and
// ws2def.h's WSA_CMSGHDR_ALIGN / WSA_CMSGDATA_ALIGN (MAX_NATURAL_ALIGNMENT is
// the pointer size on x86, x64 and ARM64). `length` counts the header and
// the unpadded data. The Linux and mingw-w64 builds check these sizes
// against the system macros.
#pragma once

#include <cstddef>
#include <cstdint>

namespace wfpredirect::core {

constexpr std::size_t kControlAlignment = sizeof(std::size_t);

constexpr std::size_t control_align(std::size_t size) {
    return (size + kControlAlignment - 1) & ~(kControlAlignment - 1);
}

constexpr std::size_t kControlHeaderSize = control_align(sizeof(std::size_t) + 2 * sizeof(int));

// CMSG_LEN / WSA_CMSG_LEN: the header plus `data_size` bytes.
constexpr std::size_t control_length(std::size_t data_size) {
    return kControlHeaderSize + data_size;
}

// CMSG_SPACE / WSA_CMSG_SPACE: what one message occupies in a buffer.
constexpr std::size_t control_space(std::size_t data_size) {
    return kControlHeaderSize + control_align(data_size);
}

struct ControlMessage {
    int level = 0;
    int type = 0;
    const std::uint8_t* data = nullptr;
    std::size_t size = 0;
};

// Writes one message at `offset` in [buffer, buffer + capacity), padding
// included. Returns the offset after it, or 0 (nothing written) when the
// message does not fit.
std::size_t append_control_message(std::uint8_t* buffer, std::size_t capacity, std::size_t offset,
                                   int level, int type, const std::uint8_t* data, std::size_t size);

// Walks the messages of a received control buffer of `length` bytes (the
// msg_controllen / Control.len the kernel returned). Reads only inside it.
class ControlMessageReader {
  public:
    ControlMessageReader(const std::uint8_t* buffer, std::size_t length)
        : buffer_(buffer), length_(length) {}

    // The next message; false at the end or at a message whose length is
    // shorter than its header or overruns the buffer (malformed() is then
    // true, and every later call answers false).
    bool next(ControlMessage& out);
    bool malformed() const { return malformed_; }

  private:
    const std::uint8_t* buffer_;
    std::size_t length_;
    std::size_t offset_ = 0;
    bool malformed_ = false;
};

} // namespace wfpredirect::core
