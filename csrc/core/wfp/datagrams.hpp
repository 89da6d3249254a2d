// Datagram redirect records over the explicit Winsock table (docs/design.md,
// "The operations"): portable like connections.hpp, so the scripted stack
// checks every argument on Linux and Wine runs it against ws2_32.
#pragma once

#include <cstddef>
#include <cstdint>

#include "../common/control_messages.hpp"
#include "../operations.hpp"
#include "connections.hpp"

namespace wfpredirect::core::wfp {

// The control buffer WSARecvMsg is given: the records and the context
// together fit the 64 KiB cap, with their two headers and padding.
constexpr std::size_t kDatagramControlSize =
    kMaxQuerySize + 2 * (kControlHeaderSize + kControlAlignment);

// setsockopt IP_WFP_REDIRECT_RECORDS and IP_WFP_REDIRECT_CONTEXT = 1 at
// IPPROTO_IP, IPPROTO_IPV6, or both on a dual-stack socket. A stack without
// them (WSAENOPROTOOPT, WSAEOPNOTSUPP, WSAEINVAL) is Outcome::unsupported.
Status enable_datagram_records(const WinsockOps& ops, std::uintptr_t socket);

// WSARecvMsg into [data, data + capacity); records and context from the
// control messages; the original destination from a WFPSampler context.
Status receive_datagram(const WinsockOps& ops, std::uintptr_t socket, std::uint8_t* data,
                        std::size_t capacity, ReceivedDatagram& out);

// WSASendMsg to `to` (IPv4-mapped on an IPv6 socket) with `records`, when
// given, as an IP_WFP_REDIRECT_RECORDS control message.
Status send_datagram(const WinsockOps& ops, std::uintptr_t socket, const std::uint8_t* data,
                     std::size_t size, const SocketAddress& to, const std::uint8_t* records,
                     std::size_t records_size);

} // namespace wfpredirect::core::wfp
