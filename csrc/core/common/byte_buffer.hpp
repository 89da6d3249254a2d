// An output buffer that starts on the stack and moves to the heap only when
// an answer does not fit (docs/design.md: "start with a 1 KiB (stack) buffer").
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>

namespace wfpredirect::core {

// First buffer size of every variable-size query, and the largest answer any
// query accepts (docs/design.md, "Windows facts").
constexpr std::size_t kInitialQuerySize = 1024;
constexpr std::size_t kMaxQuerySize = 65536;

class ByteBuffer {
  public:
    std::uint8_t* data() { return heap_ ? heap_.get() : inline_; }
    const std::uint8_t* data() const { return heap_ ? heap_.get() : inline_; }
    std::size_t capacity() const { return capacity_; }

    // Makes room for at least `size` bytes; the contents are not kept.
    void reserve(std::size_t size) {
        if (size <= capacity_)
            return;
        heap_.reset(new std::uint8_t[size]);
        capacity_ = size;
    }

  private:
    std::uint8_t inline_[kInitialQuerySize];
    std::unique_ptr<std::uint8_t[]> heap_;
    std::size_t capacity_ = kInitialQuerySize;
};

} // namespace wfpredirect::core
