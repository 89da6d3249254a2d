#include <limits>
#include <type_traits>

#include "backend.hpp"

namespace wfpredirect::core {

bool socket_handle_from_integer(long long value, SocketHandle& out) {
    if constexpr (std::is_signed_v<SocketHandle>) {
        if (value < std::numeric_limits<SocketHandle>::min() ||
            value > std::numeric_limits<SocketHandle>::max())
            return false;
    } else {
        // INVALID_SOCKET is ~0, which Python reports as -1.
        if (value < -1)
            return false;
    }
    out = static_cast<SocketHandle>(value);
    return true;
}

} // namespace wfpredirect::core
