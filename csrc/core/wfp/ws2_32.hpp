// The ws2_32 table of Winsock calls behind the portable WFP operations.
#pragma once

#include "winsock_ops.hpp"

namespace wfpredirect::core {

// Immutable and shared: each entry calls ws2_32 and reads WSAGetLastError()
// on the calling thread at once, so it needs no lock and no GIL.
const wfp::WinsockOps& real_winsock_ops();

} // namespace wfpredirect::core
