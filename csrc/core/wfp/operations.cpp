// The Windows backend: the portable WFP operations over ws2_32. MarkConfig is
// netfilter's and is ignored here.
#include <winsock2.h>

#include "../operations.hpp"
#include "connections.hpp"
#include "constants.hpp"
#include "datagrams.hpp"
#include "errors.hpp"
#include "ws2_32.hpp"
#ifdef WFPREDIRECT_EMULATED_CALLOUT
#include "emulated/emulated_callout.hpp"
#endif

namespace wfpredirect::core {
namespace {

// ws2_32; in a test build (never a release), the emulated callout driver in
// front of it (emulated/emulated_callout.hpp).
const wfp::WinsockOps& backend_ops() {
#ifdef WFPREDIRECT_EMULATED_CALLOUT
    return emulated::ops();
#else
    return real_winsock_ops();
#endif
}

// What this process has learnt of SO_ORIGINAL_DST (connections.hpp); in a
// test build the emulated callout's, which each test resets.
wfp::OriginalDstSupport& original_dst_support() {
#ifdef WFPREDIRECT_EMULATED_CALLOUT
    return emulated::original_dst_support();
#else
    static wfp::OriginalDstSupport process_wide;
    return process_wide;
#endif
}

} // namespace

const char* const kBackendName = "winsock";
const int kSoOriginalDst = wfp::kWindowsSoOriginalDst;

Status query_redirect_records(SocketHandle socket, ByteBuffer& out, const MarkConfig&) {
    return wfp::query_redirect_records(backend_ops(), socket, out);
}

Status query_redirect_records_into(SocketHandle socket, std::uint8_t* buffer, std::size_t capacity,
                                   const MarkConfig&) {
    return wfp::query_redirect_records_into(backend_ops(), socket, buffer, capacity);
}

Status query_redirect_context(SocketHandle socket, ByteBuffer& out, const MarkConfig&) {
    return wfp::query_redirect_context(backend_ops(), socket, out);
}

Status query_redirect_context_into(SocketHandle socket, std::uint8_t* buffer, std::size_t capacity,
                                   const MarkConfig&) {
    return wfp::query_redirect_context_into(backend_ops(), socket, buffer, capacity);
}

Status set_redirect_records(SocketHandle socket, const std::uint8_t* records, std::size_t size,
                            const MarkConfig&) {
    return wfp::set_redirect_records(backend_ops(), socket, records, size);
}

// The same calls as set_redirect_records: Windows keeps its checks.
Status set_upstream_records(SocketHandle socket, const std::uint8_t* records, std::size_t size,
                            const MarkConfig& marks) {
    return set_redirect_records(socket, records, size, marks);
}

Status original_destination(SocketHandle socket, SocketAddress& out, const MarkConfig&) {
    return wfp::original_destination(backend_ops(), socket, out);
}

void query_connection_state(SocketHandle socket, ConnectionState& out, const MarkConfig&) {
    wfp::query_connection_state(backend_ops(), socket, original_dst_support(), out);
}

namespace {

// The socket module's wait for a socket with a timeout, with WSAPoll.
Status wait_ready(SocketHandle socket, SHORT events, int timeout_ms) {
    if (timeout_ms < 0)
        return Status::success(0);
    WSAPOLLFD entry{static_cast<SOCKET>(socket), events, 0};
    const int ready = WSAPoll(&entry, 1, timeout_ms);
    if (ready == SOCKET_ERROR)
        return wfp::classify(static_cast<std::uint32_t>(WSAGetLastError()),
                             wfp::WinsockCall::transfer, "WSAPoll");
    if (ready == 0)
        return Status::failure(Outcome::timed_out, WSAETIMEDOUT, "WSAPoll");
    return Status::success(0);
}

} // namespace

const bool kDatagramStateOnFirstOnly = true;

Status enable_datagram_records(SocketHandle socket) {
    return wfp::enable_datagram_records(backend_ops(), socket);
}

Status receive_datagram(SocketHandle socket, std::uint8_t* data, std::size_t capacity,
                        int timeout_ms, ReceivedDatagram& out, const MarkConfig&) {
    const Status ready = wait_ready(socket, POLLRDNORM, timeout_ms);
    if (!ready.ok())
        return ready;
    return wfp::receive_datagram(backend_ops(), socket, data, capacity, out);
}

Status send_datagram(SocketHandle socket, const std::uint8_t* data, std::size_t size,
                     const SocketAddress& to, const std::uint8_t* records, std::size_t records_size,
                     int timeout_ms, const MarkConfig&) {
    const Status ready = wait_ready(socket, POLLWRNORM, timeout_ms);
    if (!ready.ok())
        return ready;
    return wfp::send_datagram(backend_ops(), socket, data, size, to, records, records_size);
}

} // namespace wfpredirect::core
