// The Windows backend: the portable WFP operations over ws2_32. MarkConfig is
// netfilter's and is ignored here.
#include "../backend.hpp"
#include "../wfp_constants.hpp"
#include "wfp_probe.hpp"
#include "winsock_ops.hpp"

namespace wfpredirect::core {

const char* const kBackendName = "winsock";
const int kSoOriginalDst = wfp::kWindowsSoOriginalDst;

Status query_redirect_records(SocketHandle socket, ByteBuffer& out, const MarkConfig&) {
    return wfp::query_redirect_records(real_winsock_ops(), socket, out);
}

Status query_redirect_records_into(SocketHandle socket, std::uint8_t* buffer, std::size_t capacity,
                                   const MarkConfig&) {
    return wfp::query_redirect_records_into(real_winsock_ops(), socket, buffer, capacity);
}

Status query_redirect_context(SocketHandle socket, ByteBuffer& out, const MarkConfig&) {
    return wfp::query_redirect_context(real_winsock_ops(), socket, out);
}

Status query_redirect_context_into(SocketHandle socket, std::uint8_t* buffer, std::size_t capacity,
                                   const MarkConfig&) {
    return wfp::query_redirect_context_into(real_winsock_ops(), socket, buffer, capacity);
}

Status set_redirect_records(SocketHandle socket, const std::uint8_t* records, std::size_t size,
                            const MarkConfig&) {
    return wfp::set_redirect_records(real_winsock_ops(), socket, records, size);
}

Status original_destination(SocketHandle socket, SocketAddress& out, const MarkConfig&) {
    return wfp::original_destination(real_winsock_ops(), socket, out);
}

} // namespace wfpredirect::core
