// The one operation only the netfilter backend has. Availability: Linux.
#pragma once

#include "../operations.hpp"

namespace wfpredirect::core::netfilter {

// Prepares a new UDP socket, before bind, to bind to a datagram's original
// destination (an address that may not be local: IP_TRANSPARENT) next to
// other such sockets (SO_REUSEADDR). Windows has no transparent bind.
Status prepare_datagram_reply_socket(SocketHandle socket);

} // namespace wfpredirect::core::netfilter
