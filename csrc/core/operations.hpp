// The operations every backend implements: netfilter/ on Linux, wfp/ on
// Windows, unsupported/ elsewhere. Exactly one backend folder is compiled
// into the extension, with common/; setup.py picks it.
#pragma once

#include <cstddef>
#include <cstdint>

#include "common/byte_buffer.hpp"
#include "common/connection_state.hpp"
#include "common/socket_address.hpp"
#include "status.hpp"

namespace wfpredirect::core {

#if defined(_WIN32)
using SocketHandle = std::uintptr_t; // SOCKET: pointer-sized and unsigned
#else
using SocketHandle = int;
#endif

// Turns an integer handle (a Python fileno()) into the platform's handle.
// -1 is passed on so that the OS reports the bad handle itself. False when
// the value cannot be a handle of this platform.
bool socket_handle_from_integer(long long value, SocketHandle& out);

// The netfilter marks (docs/design.md, "Linux facts"); their rule is
// netfilter/marks.hpp. Other backends ignore them.
// `error` is non-null when the configuration is invalid: it names the
// variable or keyword at fault, and every netfilter call reports it.
struct MarkConfig {
    std::uint32_t loop_mark = 0;
    std::uint32_t mark_mask = 0;
    const char* error = nullptr;
};

// "winsock", "netfilter" or "unsupported".
extern const char* const kBackendName;

// The platform's own SO_ORIGINAL_DST option number; 0 where there is none.
extern const int kSoOriginalDst;

// Whether the operations can block or take long (WSAIoctl: layered
// providers may intervene), so that callers release their interpreter lock.
// The Linux getsockopt/setsockopt paths cost less than releasing it.
#if defined(_WIN32)
constexpr bool kOperationsMayBlock = true;
#else
constexpr bool kOperationsMayBlock = false;
#endif

// Records: on success Status::size is the record's length and `out` holds it.
Status query_redirect_records(SocketHandle socket, ByteBuffer& out, const MarkConfig& marks);
// Writes into [buffer, buffer + capacity) and nowhere else; buffer_too_small
// carries the required size.
Status query_redirect_records_into(SocketHandle socket, std::uint8_t* buffer, std::size_t capacity,
                                   const MarkConfig& marks);

// Context: a size of 0 on success means "redirected, no context".
Status query_redirect_context(SocketHandle socket, ByteBuffer& out, const MarkConfig& marks);
Status query_redirect_context_into(SocketHandle socket, std::uint8_t* buffer, std::size_t capacity,
                                   const MarkConfig& marks);

// `records` is 1..kMaxQuerySize bytes (the glue checks the size).
Status set_redirect_records(SocketHandle socket, const std::uint8_t* records, std::size_t size,
                            const MarkConfig& marks);

// set_redirect_records on a socket the library itself has just made (its own
// upstream: a new IPv4 or IPv6 TCP socket, never bound or connected), which
// needs no check of its state: netfilter skips the TCP_INFO call; the other
// backends do exactly what set_redirect_records does.
Status set_upstream_records(SocketHandle socket, const std::uint8_t* records, std::size_t size,
                            const MarkConfig& marks);

Status original_destination(SocketHandle socket, SocketAddress& out, const MarkConfig& marks);

// The whole redirect state of accepted connection `socket` (original
// destination, records, context) and the loop check's facts (peer, mark),
// from the fewest system calls each backend needs (docs/design.md, "One pass
// per connection"). Never fails as a whole: a failure is out.failure, named
// after the single query above that reports it.
void query_connection_state(SocketHandle socket, ConnectionState& out, const MarkConfig& marks);

// ---- Datagrams (docs/design.md, "The operations").

// A datagram call's wait: kNoWait calls at once (a blocking socket then
// blocks, a non-blocking one answers would_block); a value >= 0 first waits
// at most that many milliseconds for the socket to be ready, as the socket
// module does for a socket with a timeout (timed_out when it is not).
constexpr int kNoWait = -1;

// Whether only a flow's first datagram carries its redirect state (WFP), so
// that later ones without it still belong to the flow; otherwise (netfilter)
// every redirected datagram carries it and one without it was not redirected.
extern const bool kDatagramStateOnFirstOnly;

// Asks the kernel to deliver each datagram's redirect state with it.
Status enable_datagram_records(SocketHandle socket);

// One received datagram and its redirect state.
struct ReceivedDatagram {
    std::size_t size = 0; // data bytes written (a longer datagram is cut, as recvfrom does)
    SocketAddress source; // as the socket reports it (IPv4-mapped on dual-stack)
    bool has_original_destination = false;
    SocketAddress original_destination;
    // Into `storage`; null when the datagram carried none.
    const std::uint8_t* records = nullptr;
    std::size_t records_size = 0;
    const std::uint8_t* context = nullptr;
    std::size_t context_size = 0;
    ByteBuffer storage;
};

// Receives into [data, data + capacity) and nowhere else.
Status receive_datagram(SocketHandle socket, std::uint8_t* data, std::size_t capacity,
                        int timeout_ms, ReceivedDatagram& out, const MarkConfig& marks);

// Sends one datagram to `to`, carrying `records` (1..kMaxQuerySize bytes, or
// null for none) with it alone; Status::size is the bytes sent.
Status send_datagram(SocketHandle socket, const std::uint8_t* data, std::size_t size,
                     const SocketAddress& to, const std::uint8_t* records, std::size_t records_size,
                     int timeout_ms, const MarkConfig& marks);

// An operation only one backend has is declared in that backend's folder
// (netfilter/reply_socket.hpp), not here.

} // namespace wfpredirect::core
