// An accepted connection's whole redirect state, resolved in one pass over
// the system calls (query_connection_state, operations.hpp): what
// wfpredirect.query_redirect_info returns, and what its loop check reads.
// docs/design.md, "One pass per connection".
#pragma once

#include <cstddef>
#include <cstdint>

#include "../status.hpp"
#include "byte_buffer.hpp"
#include "socket_address.hpp"

namespace wfpredirect::core {

// The single query whose name a failure carries: the one that, called alone
// on the same connection, reports the same failure, so that the fused call's
// errors read exactly as the three single calls' did.
enum class Query : std::uint8_t {
    original_destination,
    redirect_records,
    redirect_context,
};

struct ConnectionState {
    // Each piece is absent when the connection was not redirected; the
    // original destination also when it cannot be known (Windows without
    // SO_ORIGINAL_DST and a context that is not WFPSampler's).
    bool has_original_destination = false;
    SocketAddress original_destination;
    bool has_records = false;
    ByteBuffer records;
    std::size_t records_size = 0;
    // Present (with its bytes) only when the redirect has a context.
    bool has_context = false;
    ByteBuffer context;
    std::size_t context_size = 0;

    // The loop check's facts, read whatever else failed: the peer (absent
    // when the socket has none), and on Linux the connection's mark (absent
    // on Windows, and when SO_MARK could not be read).
    bool has_peer = false;
    SocketAddress peer;
    bool has_mark = false;
    std::uint32_t mark = 0;

    // The first failure that is neither "not redirected" nor an unknowable
    // original destination (ok when there is none), and which query names
    // it. The pieces after it were not asked.
    Status failure;
    Query failed_query = Query::original_destination;

    void fail(const Status& status, Query query) {
        failure = status;
        failed_query = query;
    }
};

} // namespace wfpredirect::core
