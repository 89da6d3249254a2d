#include "error_text.hpp"

#include <cstdio>
#include <cstring>

#if defined(_WIN32)
#include <windows.h>
#endif

namespace wfpredirect::core {

#if !defined(_WIN32)
namespace {
// strerror_r is the GNU one (returns the text) on glibc and the XSI one
// (returns 0 and fills the buffer) on musl; strerror itself is not
// thread-safe.
[[maybe_unused]] const char* strerror_text(const char* text, const char*) { return text; }
[[maybe_unused]] const char* strerror_text(int rc, const char* buffer) {
    return rc == 0 ? buffer : "Unknown error";
}
} // namespace
#endif

void describe_error(std::uint32_t code, char (&text)[kErrorTextSize]) {
#if defined(_WIN32)
    const DWORD length =
        FormatMessageA(FORMAT_MESSAGE_FROM_SYSTEM | FORMAT_MESSAGE_IGNORE_INSERTS, nullptr, code, 0,
                       text, static_cast<DWORD>(kErrorTextSize), nullptr);
    if (length == 0) {
        std::snprintf(text, kErrorTextSize, "Windows error 0x%08lX",
                      static_cast<unsigned long>(code));
        return;
    }
    // FormatMessage ends its text with ".\r\n".
    std::size_t end = length;
    while (end > 0 && (text[end - 1] == '\r' || text[end - 1] == '\n' || text[end - 1] == '.'))
        --end;
    text[end] = '\0';
#else
    char buffer[kErrorTextSize];
    const char* description =
        strerror_text(strerror_r(static_cast<int>(code), buffer, sizeof buffer), buffer);
    std::snprintf(text, kErrorTextSize, "%s", description);
#endif
}

} // namespace wfpredirect::core
