#include <limits>
#include <type_traits>

#include "../operations.hpp"

namespace wfpredirect::core {
namespace {

// A template, so that only the branch for the platform's handle type is
// compiled: the other one compares signed with unsigned (MSVC's C4018).
template <typename Handle> bool handle_from_integer(long long value, Handle& out) {
    if constexpr (std::is_signed_v<Handle>) {
        if (value < std::numeric_limits<Handle>::min() ||
            value > std::numeric_limits<Handle>::max())
            return false;
    } else {
        // INVALID_SOCKET is ~0, which Python reports as -1.
        if (value < -1)
            return false;
    }
    out = static_cast<Handle>(value);
    return true;
}

} // namespace

bool socket_handle_from_integer(long long value, SocketHandle& out) {
    return handle_from_integer(value, out);
}

} // namespace wfpredirect::core
