// Helpers every netfilter operation shares: sockaddr conversion, errno
// classification and the mark configuration check.
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

// EPERM and EACCES become permission_denied (SO_MARK and IP_TRANSPARENT
// need CAP_NET_RAW or CAP_NET_ADMIN); anything else os_error.
Status os_failure(int error, const char* call);

// The mark configuration's own error, reported by every netfilter call.
Status check_marks(const MarkConfig& marks);

// The mark an upstream socket or datagram carries for `records`
// (marks.hpp, upstream_mark_for). Checks the marks and decodes the record
// first (invalid_argument when either is bad).
Status upstream_mark(const std::uint8_t* records, std::size_t size, const MarkConfig& marks,
                     std::uint32_t& mark);

} // namespace wfpredirect::core::netfilter
