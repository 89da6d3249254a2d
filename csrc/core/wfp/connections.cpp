#include "connections.hpp"

#include <algorithm>
#include <cstring>

#include "../common/upstream_socket.hpp"
#include "../common/wfpsampler_context.hpp"
#include "constants.hpp"
#include "errors.hpp"

namespace wfpredirect::core::wfp {
namespace {

static_assert(kMaxQuerySize == 65536, "the over_cap clauses (constants.hpp) name the 64 KiB cap");

// What a query's success can still get wrong (Microsoft: the length "cannot
// be zero" without OVERLAPPED).
constexpr Explanation kEmptyAnswer = predicate("succeeded with 0 bytes");
constexpr Explanation kOverlongAnswer = predicate("reported more bytes than the buffer holds");
// The privilege a refused set lacks, named as Linux names its capabilities.
constexpr Explanation kNeedsAdministrator = predicate("needs administrator rights");
constexpr const char* kGetsocknameCall = "getsockname";
constexpr const char* kOriginalDstCall = "getsockopt(SO_ORIGINAL_DST)";
constexpr Explanation kOriginalDestinationUnknown =
    predicate("failed and the redirect context is not a WFPSampler context");

// The answers that mean "the buffer is too small" (Microsoft's pages disagree;
// docs/design.md lists what real stacks send). WSAEINVAL counts only with a size:
// with 0 bytes it may equally mean "not redirected".
bool is_too_small(const WinsockAnswer& answer) {
    switch (answer.error) {
    case kErrorInsufficientBuffer:
    case kWsaEfault:
    case kWsaEnobufs:
        return true;
    case kWsaEinval:
        return answer.bytes > 0;
    default:
        return false;
    }
}

bool is_ambiguous(const WinsockAnswer& answer) {
    return answer.error == kWsaEinval && answer.bytes == 0;
}

// Whether a larger buffer could change the answer. A reported size over the
// cap cannot be honoured, so it ends the query at once.
bool can_grow(const WinsockAnswer& answer) {
    return is_too_small(answer) ? answer.bytes <= kMaxQuerySize : is_ambiguous(answer);
}

// The reported size when it is larger, else double; the ambiguous WSAEINVAL
// gets its one retry at the cap.
std::size_t next_size(std::size_t size, const WinsockAnswer& answer) {
    if (is_ambiguous(answer))
        return kMaxQuerySize;
    const std::size_t grown = answer.bytes > size ? answer.bytes : 2 * size;
    return std::min(grown, kMaxQuerySize);
}

// The answer to an attempt that will not be retried.
Status final_failure(const WinsockAnswer& answer, const WfpIoctl& query) {
    if (is_too_small(answer))
        return Status::failure(Outcome::os_error, answer.error, query.call, clause(query.over_cap));
    return classify(answer.error, WinsockCall::query, query.call);
}

// A successful answer's length: 0 bytes is an error (Microsoft: it "cannot be
// zero" without OVERLAPPED), and so is a length the buffer cannot hold.
Status checked_success(const WinsockAnswer& answer, std::size_t size, const WfpIoctl& query) {
    if (answer.bytes == 0)
        return Status::failure(Outcome::os_error, 0, query.call, kEmptyAnswer);
    if (answer.bytes > size)
        return Status::failure(Outcome::os_error, 0, query.call, kOverlongAnswer);
    return Status::success(answer.bytes);
}

// Queries pass only an output buffer and no OVERLAPPED, so the call completes
// synchronously even on Python's overlapped sockets.
WinsockAnswer ask(const WinsockOps& ops, std::uintptr_t socket, const WfpIoctl& query,
                  std::uint8_t* out, std::size_t size) {
    return ops.ioctl(ops.context, socket, query.code, nullptr, 0, out,
                     static_cast<std::uint32_t>(size), nullptr);
}

Status query(const WinsockOps& ops, std::uintptr_t socket, const WfpIoctl& query, ByteBuffer& out) {
    std::size_t size = kInitialQuerySize;
    for (;;) {
        out.reserve(size);
        const WinsockAnswer answer = ask(ops, socket, query, out.data(), size);
        if (answer.rc == 0)
            return checked_success(answer, size, query);
        if (size == kMaxQuerySize || !can_grow(answer))
            return final_failure(answer, query);
        size = next_size(size, answer);
    }
}

// One attempt at the cap, into a scratch buffer, to learn the required size.
// The answer may fit after all (an ambiguous WSAEINVAL, a caller buffer under
// kMinQueryOutputSize): then it is copied and the query succeeds.
Status probe_required(const WinsockOps& ops, std::uintptr_t socket, const WfpIoctl& query,
                      std::uint8_t* buffer, std::size_t capacity) {
    ByteBuffer scratch;
    scratch.reserve(kMaxQuerySize);
    const WinsockAnswer answer = ask(ops, socket, query, scratch.data(), kMaxQuerySize);
    if (answer.rc != 0)
        return final_failure(answer, query);
    const Status found = checked_success(answer, kMaxQuerySize, query);
    if (!found.ok())
        return found;
    if (found.size > capacity)
        return Status::too_small(kErrorInsufficientBuffer, query.call, found.size);
    std::memcpy(buffer, scratch.data(), found.size);
    return found;
}

Status query_into(const WinsockOps& ops, std::uintptr_t socket, const WfpIoctl& query,
                  std::uint8_t* buffer, std::size_t capacity) {
    if (capacity >= kMinQueryOutputSize) {
        const std::size_t size = std::min(capacity, kMaxQuerySize);
        const WinsockAnswer answer = ask(ops, socket, query, buffer, size);
        if (answer.rc == 0)
            return checked_success(answer, size, query);
        if (size == kMaxQuerySize || !can_grow(answer))
            return final_failure(answer, query);
    }
    return probe_required(ops, socket, query, buffer, capacity);
}

// The context query answered not-found: the records tell "redirected without
// a context" (success, size 0) from "not redirected".
Status context_not_found(const WinsockOps& ops, std::uintptr_t socket,
                         const Status& context_answer) {
    ByteBuffer records;
    const Status records_answer = query(ops, socket, kQueryRecordsIoctl, records);
    if (records_answer.ok())
        return Status::success(0);
    return records_answer.outcome == Outcome::not_redirected ? context_answer : records_answer;
}

// Windows' own SO_ORIGINAL_DST (recent builds only), read at the level of the
// socket's family. A failure carries the failing call's error code.
Status windows_original_dst(const WinsockOps& ops, std::uintptr_t socket, SocketAddress& out) {
    std::uint8_t local[kWindowsSockaddrStorageSize] = {};
    const WinsockAnswer named = ops.getsockname(ops.context, socket, local, sizeof local);
    SocketAddress local_address;
    if (named.rc != 0 || named.bytes > sizeof local ||
        decode_windows_sockaddr(local, named.bytes, local_address) != SockaddrProblem::none)
        return classify(named.error, WinsockCall::socket_option, kGetsocknameCall);
    const int level = local_address.version == IpVersion::v6 ? kWindowsSolIpv6 : kWindowsSolIp;
    std::uint8_t original[kWindowsSockaddrStorageSize] = {};
    const WinsockAnswer answer = ops.getsockopt(ops.context, socket, level, kWindowsSoOriginalDst,
                                                original, sizeof original);
    if (answer.rc != 0 || answer.bytes > sizeof original ||
        decode_windows_sockaddr(original, answer.bytes, out) != SockaddrProblem::none)
        return classify(answer.error, WinsockCall::socket_option, kOriginalDstCall);
    return Status::success(0);
}

// A socket records can still go on (upstream_socket.hpp): IPv4 or IPv6,
// neither listening nor connected. Only asks; changes nothing.
Status check_upstream_socket(const WinsockOps& ops, std::uintptr_t socket) {
    std::uint16_t family = 0;
    const Status status = socket_family(ops, socket, family);
    if (!status.ok())
        return status;
    if (family != kWindowsAfInet && family != kWindowsAfInet6)
        return Status::refusal(Outcome::os_error, kWsaEafnosupport, kNotAnInetSocket);
    std::uint32_t listening = 0; // a BOOL
    const WinsockAnswer accepting = ops.getsockopt(
        ops.context, socket, kWindowsSolSocket, kWindowsSoAcceptconn, &listening, sizeof listening);
    if (accepting.rc != 0)
        return classify(accepting.error, WinsockCall::socket_option, "getsockopt(SO_ACCEPTCONN)");
    if (listening != 0)
        return Status::refusal(Outcome::os_error, kWsaEinval, kListeningSocket);
    std::uint8_t peer[kWindowsSockaddrStorageSize];
    const WinsockAnswer named = ops.getpeername(ops.context, socket, peer, sizeof peer);
    if (named.rc == 0)
        return Status::refusal(Outcome::os_error, kWsaEisconn, kConnectedSocket);
    if (named.error != kWsaEnotconn)
        return classify(named.error, WinsockCall::socket_option, "getpeername");
    return Status::success(0);
}

} // namespace

Status query_redirect_records(const WinsockOps& ops, std::uintptr_t socket, ByteBuffer& out) {
    return query(ops, socket, kQueryRecordsIoctl, out);
}

Status query_redirect_records_into(const WinsockOps& ops, std::uintptr_t socket,
                                   std::uint8_t* buffer, std::size_t capacity) {
    return query_into(ops, socket, kQueryRecordsIoctl, buffer, capacity);
}

Status query_redirect_context(const WinsockOps& ops, std::uintptr_t socket, ByteBuffer& out) {
    const Status answer = query(ops, socket, kQueryContextIoctl, out);
    if (answer.outcome == Outcome::not_redirected)
        return context_not_found(ops, socket, answer);
    return answer;
}

Status query_redirect_context_into(const WinsockOps& ops, std::uintptr_t socket,
                                   std::uint8_t* buffer, std::size_t capacity) {
    const Status answer = query_into(ops, socket, kQueryContextIoctl, buffer, capacity);
    if (answer.outcome == Outcome::not_redirected)
        return context_not_found(ops, socket, answer);
    return answer;
}

Status socket_family(const WinsockOps& ops, std::uintptr_t socket, std::uint16_t& family) {
    std::uint8_t info[kWindowsProtocolInfoSize];
    const WinsockAnswer answer = ops.getsockopt(ops.context, socket, kWindowsSolSocket,
                                                kWindowsSoProtocolInfoW, info, sizeof info);
    if (answer.rc != 0)
        return classify(answer.error, WinsockCall::socket_option, "getsockopt(SO_PROTOCOL_INFOW)");
    int value;
    std::memcpy(&value, info + kWindowsProtocolInfoFamilyOffset, sizeof value);
    family = static_cast<std::uint16_t>(value);
    return Status::success(0);
}

Status set_redirect_records(const WinsockOps& ops, std::uintptr_t socket,
                            const std::uint8_t* records, std::size_t size) {
    const Status usable = check_upstream_socket(ops, socket);
    if (!usable.ok())
        return usable;
    const WinsockAnswer answer = ops.ioctl(ops.context, socket, kSetRecordsIoctl.code, records,
                                           static_cast<std::uint32_t>(size), nullptr, 0, nullptr);
    if (answer.rc != 0)
        return classify(answer.error, WinsockCall::socket_option, kSetRecordsIoctl.call,
                        answer.error == kWsaEacces ? kNeedsAdministrator : Explanation{});
    return Status::success(0);
}

namespace {

// The pieces of query_connection_state before the peer; see connections.hpp.
void resolve_pieces(const WinsockOps& ops, std::uintptr_t socket, OriginalDstSupport& support,
                    ConnectionState& out) {
    const std::uint32_t lacking = support.lacking_code();
    const Status direct = lacking == 0
                              ? windows_original_dst(ops, socket, out.original_destination)
                              : classify(lacking, WinsockCall::socket_option, kOriginalDstCall);
    Status records;
    bool records_asked = false;
    Status context;
    bool context_asked = false;
    if (direct.ok()) {
        out.has_original_destination = true;
        out.original_destination = unmap_ipv4(out.original_destination);
    } else {
        // original_destination's fallback: the context, whose not-found the
        // records decide.
        context = query(ops, socket, kQueryContextIoctl, out.context);
        context_asked = true;
        if (context.outcome == Outcome::not_redirected) {
            records = query(ops, socket, kQueryRecordsIoctl, out.records);
            records_asked = true;
            if (!records.ok() && records.outcome != Outcome::not_redirected)
                return out.fail(records, Query::original_destination);
        } else if (!context.ok()) {
            return out.fail(context, Query::original_destination);
        } else {
            SocketAddress context_local;
            if (decode_wfpsampler_context(out.context.data(), context.size,
                                          out.original_destination, context_local)
                    .ok()) {
                out.has_original_destination = true;
                out.original_destination = unmap_ipv4(out.original_destination);
            }
        }
    }
    if (!records_asked)
        records = query(ops, socket, kQueryRecordsIoctl, out.records);
    if (records.outcome == Outcome::not_redirected)
        return; // without records there is no redirect, so no context either
    if (!records.ok())
        return out.fail(records, Query::redirect_records);
    out.has_records = true;
    out.records_size = records.size;
    // Asked (not from `support`), failed as a build without the option
    // answers, on a connection that was redirected.
    if (lacking == 0 && direct.call == kOriginalDstCall && !direct.ok() &&
        shows_no_original_dst(direct.code))
        support.lacks(direct.code);
    if (!context_asked)
        context = query(ops, socket, kQueryContextIoctl, out.context);
    if (context.ok()) {
        out.has_context = true;
        out.context_size = context.size;
    } else if (context.outcome != Outcome::not_redirected) {
        out.fail(context, Query::redirect_context);
    }
}

} // namespace

bool shows_no_original_dst(std::uint32_t error) {
    return error == kWsaEinval || error == kWsaEnoprotoopt;
}

void query_connection_state(const WinsockOps& ops, std::uintptr_t socket,
                            OriginalDstSupport& support, ConnectionState& out) {
    resolve_pieces(ops, socket, support, out);
    std::uint8_t peer[kWindowsSockaddrStorageSize] = {};
    const WinsockAnswer named = ops.getpeername(ops.context, socket, peer, sizeof peer);
    out.has_peer = named.rc == 0 && named.bytes <= sizeof peer &&
                   decode_windows_sockaddr(peer, named.bytes, out.peer) == SockaddrProblem::none;
}

// An IPv4 connection on a dual-stack socket reports IPv4-mapped addresses;
// its original destination is given as IPv4, as on Linux, so that the
// proxy's upstream is an IPv4 socket.
Status original_destination(const WinsockOps& ops, std::uintptr_t socket, SocketAddress& out) {
    const Status direct = windows_original_dst(ops, socket, out);
    if (direct.ok()) {
        out = unmap_ipv4(out);
        return direct;
    }
    ByteBuffer context;
    const Status context_answer = query_redirect_context(ops, socket, context);
    if (!context_answer.ok())
        return context_answer;
    SocketAddress context_local;
    if (decode_wfpsampler_context(context.data(), context_answer.size, out, context_local).ok()) {
        out = unmap_ipv4(out);
        return Status::success(0);
    }
    return Status::failure(Outcome::unsupported, direct.code, kOriginalDstCall,
                           kOriginalDestinationUnknown);
}

} // namespace wfpredirect::core::wfp
