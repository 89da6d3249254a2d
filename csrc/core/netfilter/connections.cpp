// The netfilter backend (Linux): redirect state lives in conntrack (REDIRECT,
// DNAT), in the socket itself (TPROXY) and in the connection's mark. See
// docs/design.md, "Linux facts", for every rule applied here.
#include <cerrno>
#include <cstring>

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include "../common/upstream_socket.hpp"
#include "../operations.hpp"
#include "addresses.hpp"
#include "errors.hpp"
#include "marks.hpp"
#include "record.hpp"

namespace wfpredirect::core {
namespace {
// linux/netfilter_ipv4.h and linux/netfilter_ipv6/ip6_tables.h define these,
// but those headers clash with glibc's netinet/in.h.
constexpr int kLinuxSoOriginalDst = 80;     // SO_ORIGINAL_DST, level SOL_IP
constexpr int kLinuxIp6tSoOriginalDst = 80; // IP6T_SO_ORIGINAL_DST, level SOL_IPV6
} // namespace

const char* const kBackendName = "netfilter";
const int kSoOriginalDst = kLinuxSoOriginalDst;

namespace {

using netfilter::check_marks;
using netfilter::classify;
using netfilter::same_endpoint;
using netfilter::SystemCall;
using netfilter::to_socket_address;
using netfilter::travelling_bits;

// Errors of the calls these operations make are theirs: socket options.
Status os_failure(int error, const char* call, Explanation denied = {}) {
    return classify(error, SystemCall::socket_option, call, denied);
}

constexpr const char* kOriginalDstCall = "getsockopt(SO_ORIGINAL_DST)";

Status not_redirected(int error, const char* call, Explanation why) {
    return Status::failure(Outcome::not_redirected, static_cast<std::uint32_t>(error), call, why);
}

// What SO_ORIGINAL_DST answered for a connection nothing rewrote.
struct NatAnswer {
    int error;
    const char* call;
    Explanation why;
};

struct Redirect {
    SocketAddress original_destination;
    bool transparent = false;
    // What getpeername answered, when resolving asked it (the loop check
    // reuses it): peer_asked, and has_peer with the address on success.
    bool peer_asked = false;
    bool has_peer = false;
    SocketAddress peer;
};

// getpeername into `redirect`; false with errno set when it failed.
bool read_peer(int fd, Redirect& redirect) {
    sockaddr_storage storage;
    socklen_t size = sizeof storage;
    redirect.peer_asked = true;
    if (getpeername(fd, reinterpret_cast<sockaddr*>(&storage), &size) != 0)
        return false;
    redirect.has_peer = to_socket_address(storage, redirect.peer);
    return true;
}

// A connection with no NAT entry is still redirected when it was accepted
// on an IP_TRANSPARENT (TPROXY) socket: its local address is the original
// destination. `nat_error` is what SO_ORIGINAL_DST answered.
Status resolve_transparent(int fd, const SocketAddress& local, const NatAnswer& nat,
                           Redirect& out) {
    int transparent = 0;
    socklen_t size = sizeof transparent;
    // IP_TRANSPARENT at SOL_IP reads the same flag on IPv4 and IPv6 sockets.
    if (getsockopt(fd, SOL_IP, IP_TRANSPARENT, &transparent, &size) != 0)
        return os_failure(errno, "getsockopt(IP_TRANSPARENT)");
    if (!transparent)
        return not_redirected(nat.error, nat.call, nat.why);
    // A listening or unconnected transparent socket has no original
    // destination.
    if (!read_peer(fd, out)) {
        if (errno == ENOTCONN)
            return not_redirected(ENOTCONN, "getpeername", clause("the socket is not connected"));
        return os_failure(errno, "getpeername");
    }
    out.original_destination = local;
    out.transparent = true;
    return Status::success(0);
}

// conntrack also answers on the socket that made a connection: its original
// destination is simply its peer. A redirected (accepted) connection's
// original destination is never its peer.
Status connected_side_check(int fd, Redirect& redirect) {
    if (!read_peer(fd, redirect))
        return os_failure(errno, "getpeername");
    if (redirect.has_peer && same_endpoint(redirect.original_destination, redirect.peer))
        return not_redirected(ENOENT, nullptr,
                              clause("SO_ORIGINAL_DST equals the peer address (the socket made "
                                     "the connection)"));
    return Status::success(0);
}

Status resolve_redirect(int fd, Redirect& out) {
    sockaddr_storage local_storage;
    socklen_t local_size = sizeof local_storage;
    if (getsockname(fd, reinterpret_cast<sockaddr*>(&local_storage), &local_size) != 0)
        return os_failure(errno, "getsockname");
    SocketAddress local;
    if (!to_socket_address(local_storage, local))
        return Status::failure(Outcome::os_error, ENOPROTOOPT, "getsockname",
                               clause("not an IPv4 or IPv6 socket"));

    // Chosen by the (IPv4-mapped) local address, not by the socket family.
    sockaddr_storage original_storage;
    socklen_t original_size;
    int rc;
    if (local.version == IpVersion::v4) {
        original_size = sizeof(sockaddr_in);
        rc = getsockopt(fd, SOL_IP, kLinuxSoOriginalDst, &original_storage, &original_size);
    } else {
        original_size = sizeof(sockaddr_in6);
        rc = getsockopt(fd, SOL_IPV6, kLinuxIp6tSoOriginalDst, &original_storage, &original_size);
    }
    if (rc == 0) {
        if (!to_socket_address(original_storage, out.original_destination))
            return Status::failure(Outcome::os_error, EAFNOSUPPORT, kOriginalDstCall,
                                   predicate("returned an unknown family"));
        if (!same_endpoint(out.original_destination, local))
            return connected_side_check(fd, out);
        // conntrack knows the connection but nothing rewrote it.
        return resolve_transparent(
            fd, local, {ENOENT, nullptr, clause("SO_ORIGINAL_DST equals the local address")}, out);
    }
    const int error = errno;
    switch (error) {
    case ENOENT:
        return resolve_transparent(
            fd, local, {ENOENT, kOriginalDstCall, clause("no NAT entry for the connection")}, out);
    case ENOTCONN:
        return not_redirected(ENOTCONN, kOriginalDstCall, clause("the socket is not connected"));
    case ENOPROTOOPT: {
        // Either not a TCP/SCTP socket, or no conntrack module to ask.
        int protocol = 0;
        socklen_t size = sizeof protocol;
        if (getsockopt(fd, SOL_SOCKET, SO_PROTOCOL, &protocol, &size) != 0)
            return os_failure(errno, "getsockopt(SO_PROTOCOL)");
        if (protocol != IPPROTO_TCP && protocol != IPPROTO_SCTP)
            return Status::failure(Outcome::os_error, ENOPROTOOPT, kOriginalDstCall,
                                   clause("not a TCP socket"));
        return resolve_transparent(fd, local,
                                   {ENOPROTOOPT, kOriginalDstCall,
                                    clause("connection tracking is not loaded, nothing was NATed")},
                                   out);
    }
    default:
        return os_failure(error, kOriginalDstCall);
    }
}

// The redirect of the connection on fd, once the marks are known valid:
// what every query starts with.
Status checked_redirect(int fd, const MarkConfig& marks, Redirect& redirect) {
    const Status status = check_marks(marks);
    if (!status.ok())
        return status;
    return resolve_redirect(fd, redirect);
}

constexpr const char* kMarkCall = "getsockopt(SO_MARK)";

// The record of `redirect` with the connection's `mark`, in `out`
// (kNetfilterRecordMaxSize bytes); returns its length.
std::size_t encode_record(const Redirect& redirect, std::uint32_t mark, const MarkConfig& marks,
                          std::uint8_t* out) {
    NetfilterRecord record;
    record.original_destination = redirect.original_destination;
    record.mark = travelling_bits(mark, marks);
    record.transparent = redirect.transparent;
    return encode_netfilter_record(record, out);
}

// The redirect record of the connection on fd, built in `out`
// (kNetfilterRecordMaxSize bytes).
Status build_record(int fd, const MarkConfig& marks, std::uint8_t* out) {
    Redirect redirect;
    const Status status = checked_redirect(fd, marks, redirect);
    if (!status.ok())
        return status;
    std::uint32_t mark = 0;
    socklen_t size = sizeof mark;
    if (getsockopt(fd, SOL_SOCKET, SO_MARK, &mark, &size) != 0)
        return os_failure(errno, kMarkCall);
    return Status::success(encode_record(redirect, mark, marks, out));
}

Status context_of(int fd, const MarkConfig& marks) {
    Redirect redirect;
    const Status status = checked_redirect(fd, marks, redirect);
    if (!status.ok())
        return status;
    // netfilter has no driver-defined context: redirected, no context.
    return Status::success(0);
}

} // namespace

Status query_redirect_records(SocketHandle socket, ByteBuffer& out, const MarkConfig& marks) {
    static_assert(kNetfilterRecordMaxSize <= kInitialQuerySize, "a record fits the first buffer");
    return build_record(socket, marks, out.data());
}

Status query_redirect_records_into(SocketHandle socket, std::uint8_t* buffer, std::size_t capacity,
                                   const MarkConfig& marks) {
    std::uint8_t record[kNetfilterRecordMaxSize];
    Status status = build_record(socket, marks, record);
    if (!status.ok())
        return status;
    if (status.size > capacity)
        return Status::too_small(ENOBUFS, nullptr, status.size,
                                 clause("the buffer is smaller than the records"));
    std::memcpy(buffer, record, status.size);
    return status;
}

Status query_redirect_context(SocketHandle socket, ByteBuffer&, const MarkConfig& marks) {
    return context_of(socket, marks);
}

Status query_redirect_context_into(SocketHandle socket, std::uint8_t*, std::size_t,
                                   const MarkConfig& marks) {
    return context_of(socket, marks);
}

namespace {

// A socket records can still go on (upstream_socket.hpp): IPv4 or IPv6,
// neither listening nor connected. Only asks; changes nothing. For TCP, the
// accept path's case, one call answers: TCP_INFO's first byte is the
// connection's state (the kernel copies as much of struct tcp_info as asked).
Status check_upstream_socket(SocketHandle socket) {
    std::uint8_t state = 0;
    socklen_t length = sizeof state;
    if (getsockopt(socket, IPPROTO_TCP, TCP_INFO, &state, &length) == 0 && length == 1) {
        if (state == TCP_CLOSE) // new, or bound and not connected
            return Status::success(0);
        if (state == TCP_LISTEN)
            return Status::refusal(Outcome::os_error, EINVAL, kListeningSocket);
        return Status::refusal(Outcome::os_error, EISCONN, kConnectedSocket);
    }
    // Not TCP: UDP, or another family altogether.
    int domain = 0;
    length = sizeof domain;
    if (getsockopt(socket, SOL_SOCKET, SO_DOMAIN, &domain, &length) != 0)
        return os_failure(errno, "getsockopt(SO_DOMAIN)");
    if (domain != AF_INET && domain != AF_INET6)
        return Status::refusal(Outcome::os_error, EAFNOSUPPORT, kNotAnInetSocket);
    sockaddr_storage peer{};
    length = sizeof peer;
    if (getpeername(socket, reinterpret_cast<sockaddr*>(&peer), &length) == 0)
        return Status::refusal(Outcome::os_error, EISCONN, kConnectedSocket);
    if (errno != ENOTCONN)
        return os_failure(errno, "getpeername");
    return Status::success(0);
}

} // namespace

namespace {

// The upstream's mark from `records`, then (with `check`) the socket's state,
// then SO_MARK.
Status mark_upstream(SocketHandle socket, const std::uint8_t* records, std::size_t size,
                     const MarkConfig& marks, bool check) {
    std::uint32_t mark = 0;
    Status status = upstream_mark(records, size, marks, mark);
    if (!status.ok())
        return status;
    if (check) {
        status = check_upstream_socket(socket);
        if (!status.ok())
            return status;
    }
    if (setsockopt(socket, SOL_SOCKET, SO_MARK, &mark, sizeof mark) != 0)
        return os_failure(errno, "setsockopt(SO_MARK)", netfilter::kNeedsCapability);
    return Status::success(0);
}

} // namespace

Status set_redirect_records(SocketHandle socket, const std::uint8_t* records, std::size_t size,
                            const MarkConfig& marks) {
    return mark_upstream(socket, records, size, marks, true);
}

Status set_upstream_records(SocketHandle socket, const std::uint8_t* records, std::size_t size,
                            const MarkConfig& marks) {
    return mark_upstream(socket, records, size, marks, false);
}

Status original_destination(SocketHandle socket, SocketAddress& out, const MarkConfig& marks) {
    Redirect redirect;
    const Status status = checked_redirect(socket, marks, redirect);
    if (status.ok())
        out = redirect.original_destination;
    return status;
}

// The four calls that carry everything on a REDIRECT connection:
// getsockname, SO_ORIGINAL_DST, getpeername (the connected-side check, and
// the loop check's peer) and SO_MARK (the record's mark, and the loop
// check's); IP_TRANSPARENT only when SO_ORIGINAL_DST cannot answer (TPROXY,
// or not redirected). The peer and the mark are read whatever the redirect
// answered, as the loop check comes before any error.
void query_connection_state(SocketHandle socket, ConnectionState& out, const MarkConfig& marks) {
    Redirect redirect;
    const Status status = checked_redirect(socket, marks, redirect);
    if (!redirect.peer_asked)
        read_peer(socket, redirect);
    out.has_peer = redirect.has_peer;
    out.peer = redirect.peer;
    std::uint32_t mark = 0;
    socklen_t size = sizeof mark;
    out.has_mark = getsockopt(socket, SOL_SOCKET, SO_MARK, &mark, &size) == 0;
    const int mark_error = errno;
    out.mark = mark;
    if (!status.ok()) {
        if (status.outcome != Outcome::not_redirected)
            out.fail(status, Query::original_destination);
        return;
    }
    out.has_original_destination = true;
    out.original_destination = redirect.original_destination;
    if (!out.has_mark) {
        out.fail(os_failure(mark_error, kMarkCall), Query::redirect_records);
        return;
    }
    out.records_size = encode_record(redirect, mark, marks, out.records.data());
    out.has_records = true;
    // netfilter has no driver-defined context: redirected, no context.
}

} // namespace wfpredirect::core
