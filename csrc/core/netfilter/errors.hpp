// The Linux backend's one classifier: what an errno means, for the kind of
// call that got it (docs/design.md, "Errors: one table for both backends"),
// and its one text of the privilege SO_MARK and IP_TRANSPARENT need.
#pragma once

#include <cstdint>

#include "../status.hpp"

namespace wfpredirect::core::netfilter {

// What a refused SO_MARK or IP_TRANSPARENT lacks.
#define WFPREDIRECT_NEEDS_CAPABILITY "needs CAP_NET_RAW or CAP_NET_ADMIN"
constexpr Explanation kNeedsCapability = predicate(WFPREDIRECT_NEEDS_CAPABILITY);

enum class SystemCall : std::uint8_t {
    socket_option, // getsockopt, setsockopt, getsockname, getpeername
    transfer,      // recvmsg, sendmsg, poll: a non-blocking socket may have to wait
};

// EPERM and EACCES are permission_denied (with `denied`, the explanation
// they get, when given); for a transfer, EAGAIN is would_block and EINTR
// interrupted (the glue runs the signal handlers and retries). Anything else
// is os_error.
Status classify(int error, SystemCall kind, const char* call, Explanation denied = {});

} // namespace wfpredirect::core::netfilter
