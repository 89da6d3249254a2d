// The operating system's own words for an error code.
#pragma once

#include <cstddef>
#include <cstdint>

namespace wfpredirect::core {

constexpr std::size_t kErrorTextSize = 256;

// Whether Status::code is a Windows error (winerror) rather than an errno.
#if defined(_WIN32)
constexpr bool kCodeIsWinerror = true;
#else
constexpr bool kCodeIsWinerror = false;
#endif

// Writes the system's description of `code` into text, NUL-terminated.
void describe_error(std::uint32_t code, char (&text)[kErrorTextSize]);

} // namespace wfpredirect::core
