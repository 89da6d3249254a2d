// The WFP redirect operations, written once over an explicit table of Winsock
// calls (docs/design.md, "The OS boundary on Windows"). Portable: no Winsock
// header, so the probe-and-grow loop and the error classes are tested on
// Linux against a scripted stack, and under Wine against ws2_32.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>

#include "../common/byte_buffer.hpp"
#include "../common/connection_state.hpp"
#include "../common/socket_address.hpp"
#include "../status.hpp"
#include "winsock_ops.hpp"

namespace wfpredirect::core::wfp {

// Microsoft: "cbOutBuffer must be at least the size of a ULONG".
constexpr std::size_t kMinQueryOutputSize = 4;

// Redirect records into `out`, grown from kInitialQuerySize up to
// kMaxQuerySize as the stack asks (docs/design.md, "Windows facts"). On success
// Status::size is the record's length.
Status query_redirect_records(const WinsockOps& ops, std::uintptr_t socket, ByteBuffer& out);

// Writes only inside [buffer, buffer + capacity). When the answer does not
// fit, one internal kMaxQuerySize probe finds the size:
// Outcome::buffer_too_small with code ERROR_INSUFFICIENT_BUFFER and
// Status::size the required size.
Status query_redirect_records_into(const WinsockOps& ops, std::uintptr_t socket,
                                   std::uint8_t* buffer, std::size_t capacity);

// The redirect context; on a not-found answer the records decide: present
// means success with size 0 (redirected, no context), absent keeps the
// context's not_redirected answer.
Status query_redirect_context(const WinsockOps& ops, std::uintptr_t socket, ByteBuffer& out);
Status query_redirect_context_into(const WinsockOps& ops, std::uintptr_t socket,
                                   std::uint8_t* buffer, std::size_t capacity);

// The socket's address family (WSAPROTOCOL_INFOW.iAddressFamily): a UDP
// socket that has not sent yet has no name for getsockname to report.
Status socket_family(const WinsockOps& ops, std::uintptr_t socket, std::uint16_t& family);

// `records` (1..kMaxQuerySize bytes) is the INPUT buffer; success has size 0.
// A socket that is not IPv4 or IPv6, listens or is connected is refused
// first (upstream_socket.hpp), with no IOCTL made.
Status set_redirect_records(const WinsockOps& ops, std::uintptr_t socket,
                            const std::uint8_t* records, std::size_t size);

// Windows' SO_ORIGINAL_DST at the level of the socket's family; when that
// fails, the remote address of a WFPSampler context. Redirected but neither
// known: Outcome::unsupported with SO_ORIGINAL_DST's error code. Otherwise the
// context query's failure (which consulted the records on not-found).
Status original_destination(const WinsockOps& ops, std::uintptr_t socket, SocketAddress& out);

// Whether this build has Windows' SO_ORIGINAL_DST, as far as its answers
// have shown. A build without it answers every connection the same way, so
// once it has on a connection the records show redirected, the fused query
// stops asking for the rest of the process (docs/design.md, "One pass per
// connection"). The single original_destination always asks.
class OriginalDstSupport {
  public:
    // 0 while not known to lack it; else the code that showed it.
    std::uint32_t lacking_code() const { return lacking_.load(std::memory_order_relaxed); }
    void lacks(std::uint32_t code) { lacking_.store(code, std::memory_order_relaxed); }
    void forget() { lacking_.store(0, std::memory_order_relaxed); }

  private:
    std::atomic<std::uint32_t> lacking_{0};
};

// The answers by which a build shows it has no SO_ORIGINAL_DST: WSAEINVAL
// (the level SOL_IP 0xFFFB unknown; Wine's answer) and WSAENOPROTOOPT (the
// option unknown).
bool shows_no_original_dst(std::uint32_t error);

// The connection's whole state with each WFP query IOCTL asked at most once
// (a query that grows its buffer asks again only as the buffer rules say):
// SO_ORIGINAL_DST (getsockname, getsockopt) unless `support` knows the build
// lacks it; then, as the single calls would have it, the context and the
// records when SO_ORIGINAL_DST did not answer (the context first: the
// original destination falls back to it), else the records, and the
// context only when the records show a redirect; getpeername last, for the
// loop check. A failure is named after the single query that reports it.
void query_connection_state(const WinsockOps& ops, std::uintptr_t socket,
                            OriginalDstSupport& support, ConnectionState& out);

} // namespace wfpredirect::core::wfp
