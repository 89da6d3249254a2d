// Socket addresses as the Linux kernel gives and takes them.
#pragma once

#include <sys/socket.h>

#include "../operations.hpp"

namespace wfpredirect::core::netfilter {

// How an IPv4-mapped IPv6 address (::ffff:a.b.c.d) is reported.
enum class MappedAddresses : bool {
    as_ipv4, // a redirect's original destination: an IPv4 connection
    keep,    // a datagram's source, as the socket module reports it
};

// False for a family other than AF_INET and AF_INET6.
bool to_socket_address(const sockaddr_storage& storage, SocketAddress& out,
                       MappedAddresses mapped = MappedAddresses::as_ipv4);

// The sockaddr for `address`; returns its length.
socklen_t to_sockaddr(const SocketAddress& address, sockaddr_storage& out);

// Same address and port (flowinfo and scope aside).
bool same_endpoint(const SocketAddress& a, const SocketAddress& b);

} // namespace wfpredirect::core::netfilter
