// The Windows backend's one classifier: what a Winsock answer means, for the
// kind of call that got it (docs/design.md, "Errors: one table for both
// backends"). Every failure of a Winsock call in wfp/ becomes a Status here.
#pragma once

#include <cstdint>

#include "../status.hpp"

namespace wfpredirect::core::wfp {

enum class WinsockCall : std::uint8_t {
    query,           // a WFP query IOCTL: the not-found codes mean not redirected
    socket_option,   // a WFP IOCTL that changes the socket, getsockopt, getpeername
    datagram_option, // setsockopt(IP_WFP_REDIRECT_*): a stack without them refuses it
    transfer,        // WSARecvMsg, WSASendMsg, WSAPoll: a non-blocking socket may have to wait
};

// WSAEACCES is permission_denied for every kind; then, by kind:
// query: WSAEINVAL (after the retry at the cap), FWP_E_NOT_FOUND,
//   ERROR_NOT_FOUND and WSAENOTCONN are not_redirected, WSAEOPNOTSUPP
//   unsupported;
// socket_option: WSAEOPNOTSUPP unsupported;
// datagram_option: WSAENOPROTOOPT, WSAEOPNOTSUPP and WSAEINVAL unsupported;
// transfer: WSAEWOULDBLOCK would_block.
// Anything else is os_error.
Status classify(std::uint32_t error, WinsockCall kind, const char* call,
                Explanation explanation = {});

} // namespace wfpredirect::core::wfp
