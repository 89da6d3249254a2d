// An emulated WFP callout driver, for test builds only (the Windows lane):
// setup.py compiles this folder and defines WFPREDIRECT_EMULATED_CALLOUT
// only when WFPREDIRECT_EMULATED_CALLOUT=1 at build time, which no release
// build sets. Wine (like a Windows without a callout) answers WSAEOPNOTSUPP
// to every WFP code; this table answers like a stack whose callout driver
// redirected the connections a test describes, at the one boundary the
// backend already has (the Winsock ops table), and forwards every other
// call to ws2_32.
#pragma once

#include <cstdint>
#include <vector>

#include "../../common/socket_address.hpp"
#include "../connections.hpp"
#include "../winsock_ops.hpp"

namespace wfpredirect::core::emulated {

// One connection (or UDP flow) the emulated callout redirected, found by
// its client's address as the accepted socket's getpeername (or the
// datagram's source) reports it; an IPv4-mapped address matches IPv4.
struct Redirect {
    SocketAddress peer;
    SocketAddress original_destination;
    std::vector<std::uint8_t> records;
    bool has_context = false;
    std::vector<std::uint8_t> context;
    // How a too-small query buffer is answered: ERROR_INSUFFICIENT_BUFFER
    // (122) with the required size; any other code (WSAEINVAL, 10022, as
    // some stacks do, or one no page documents) with 0 bytes.
    std::uint32_t too_small_error = 122;
    // Whether getsockopt(SO_ORIGINAL_DST) answers (recent Windows builds);
    // otherwise it is forwarded (Wine answers WSAEINVAL).
    bool original_dst_option = false;
};

// A SIO_SET_WFP_CONNECTION_REDIRECT_RECORDS the stack received, with the
// socket's state at that moment (real getsockname/getpeername).
struct SetCall {
    std::uintptr_t socket;
    std::vector<std::uint8_t> records;
    bool bound;
    bool connected;
};

// An IP_WFP_REDIRECT_RECORDS control message WSASendMsg carried.
struct SentRecords {
    std::uintptr_t socket;
    int level;
    std::vector<std::uint8_t> records;
    SocketAddress destination;
};

// Forgets every redirect and every call seen, and what the fused query
// learnt of SO_ORIGINAL_DST (so that each test starts as in a new process).
// A query on a connection that was not redirected answers
// `not_redirected_error` (WSAEINVAL, which the core retries once at its cap,
// FWP_E_NOT_FOUND or ERROR_NOT_FOUND).
void reset(std::uint32_t not_redirected_error);
void add(const Redirect& redirect);
std::vector<SetCall> set_calls();
std::vector<SentRecords> sent_records();
// How many of the three WFP IOCTLs were asked.
std::uint32_t wfp_ioctl_count();

// The calls the backend made through this table since the last reset, each
// WFP code on its own: the two query IOCTLs, the set IOCTL,
// getsockopt(SO_ORIGINAL_DST) at either level (answered here or forwarded),
// getsockname, getpeername, and every other call forwarded to ws2_32
// (benchmarks/bench_windows_calls.py counts them per connection). The
// driver's own lookups of a connection's peer are not counted.
struct CallCounts {
    std::uint32_t records_queries = 0;
    std::uint32_t context_queries = 0;
    std::uint32_t sets = 0;
    std::uint32_t original_dst_options = 0;
    std::uint32_t getsocknames = 0;
    std::uint32_t getpeernames = 0;
    std::uint32_t others = 0;
};
CallCounts call_counts();

// The backend's OriginalDstSupport in a test build (connections.hpp).
wfp::OriginalDstSupport& original_dst_support();

// The table the Windows backend uses in a test build.
const wfp::WinsockOps& ops();

} // namespace wfpredirect::core::emulated
