// The backend for every platform that is neither Windows nor Linux: the
// module imports, and every operation answers UnsupportedError.
#include <cerrno>

#include "../operations.hpp"

namespace wfpredirect::core {

const char* const kBackendName = "unsupported";
const int kSoOriginalDst = 0;

namespace {

Status unsupported() {
    return Status::refusal(Outcome::unsupported, EOPNOTSUPP,
                           "connection redirection is supported on Windows and Linux only");
}

} // namespace

Status query_redirect_records(SocketHandle, ByteBuffer&, const MarkConfig&) {
    return unsupported();
}

Status query_redirect_records_into(SocketHandle, std::uint8_t*, std::size_t, const MarkConfig&) {
    return unsupported();
}

Status query_redirect_context(SocketHandle, ByteBuffer&, const MarkConfig&) {
    return unsupported();
}

Status query_redirect_context_into(SocketHandle, std::uint8_t*, std::size_t, const MarkConfig&) {
    return unsupported();
}

Status set_redirect_records(SocketHandle, const std::uint8_t*, std::size_t, const MarkConfig&) {
    return unsupported();
}

Status set_upstream_records(SocketHandle, const std::uint8_t*, std::size_t, const MarkConfig&) {
    return unsupported();
}

Status original_destination(SocketHandle, SocketAddress&, const MarkConfig&) {
    return unsupported();
}

// As the single calls answer: an unknowable original destination (None),
// then the records query's refusal.
void query_connection_state(SocketHandle, ConnectionState& out, const MarkConfig&) {
    out.fail(unsupported(), Query::redirect_records);
}

const bool kDatagramStateOnFirstOnly = false;

Status enable_datagram_records(SocketHandle) { return unsupported(); }

Status receive_datagram(SocketHandle, std::uint8_t*, std::size_t, int, ReceivedDatagram&,
                        const MarkConfig&) {
    return unsupported();
}

Status send_datagram(SocketHandle, const std::uint8_t*, std::size_t, const SocketAddress&,
                     const std::uint8_t*, std::size_t, int, const MarkConfig&) {
    return unsupported();
}

} // namespace wfpredirect::core
