// Datagram redirect records on Linux (docs/design.md, "The operations"):
// a TPROXY socket learns each datagram's original destination from
// IP_ORIGDSTADDR / IPV6_ORIGDSTADDR and its inbound mark from SO_RCVMARK;
// an outgoing datagram carries its upstream mark as a per-datagram SO_MARK
// control message, so flows sharing a socket never race on socket state.
#include <algorithm>
#include <cerrno>
#include <cstring>

#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>

#include "../common/control_messages.hpp"
#include "../operations.hpp"
#include "addresses.hpp"
#include "errors.hpp"
#include "marks.hpp"
#include "record.hpp"
#include "reply_socket.hpp"

namespace wfpredirect::core {
namespace {

using netfilter::check_marks;
using netfilter::classify;
using netfilter::SystemCall;
using netfilter::travelling_bits;

// asm-generic/socket.h (Linux 5.19+); older C libraries lack the name.
#ifdef SO_RCVMARK
constexpr int kSoRcvmark = SO_RCVMARK;
#else
constexpr int kSoRcvmark = 75;
#endif

// What the control messages are given: an address, then a 32-bit mark.
constexpr std::size_t kReceiveControlSize =
    control_space(sizeof(sockaddr_in6)) + control_space(sizeof(std::uint32_t)) +
    control_space(sizeof(sockaddr_in6)); // room for one unexpected message
static_assert(kReceiveControlSize <= kInitialQuerySize, "the control data fits the inline buffer");
static_assert(control_space(sizeof(std::uint32_t)) == CMSG_SPACE(sizeof(std::uint32_t)));
static_assert(control_length(sizeof(std::uint32_t)) == CMSG_LEN(sizeof(std::uint32_t)));

// A socket option's failure; `denied`, when given, is what a refusal lacks.
Status os_failure(int error, const char* call, Explanation denied = {}) {
    return classify(error, SystemCall::socket_option, call, denied);
}

// A datagram call's failure: would_block and interrupted keep their meaning
// for the glue.
Status transfer_failure(int error, const char* call, Explanation denied = {}) {
    return classify(error, SystemCall::transfer, call, denied);
}

constexpr Explanation kNotAnInetSocket = clause("not an IPv4 or IPv6 socket");
// An EPERM answer to a sendmsg that carries a mark.
constexpr Explanation kControlMessageNeedsCapability =
    clause("an SO_MARK control message " WFPREDIRECT_NEEDS_CAPABILITY);

Status set_flag(int fd, int level, int name, const char* call, Explanation denied = {}) {
    const int on = 1;
    if (setsockopt(fd, level, name, &on, sizeof on) == 0)
        return Status::success(0);
    return os_failure(errno, call, denied);
}

int socket_int(int fd, int name, int& out) {
    socklen_t size = sizeof out;
    return getsockopt(fd, SOL_SOCKET, name, &out, &size);
}

Status wait_ready(int fd, short events, int timeout_ms) {
    if (timeout_ms < 0)
        return Status::success(0);
    pollfd entry{fd, events, 0};
    const int ready = poll(&entry, 1, timeout_ms);
    if (ready < 0)
        return transfer_failure(errno, "poll");
    if (ready == 0)
        return Status::failure(Outcome::timed_out, ETIMEDOUT, "poll");
    return Status::success(0);
}

// The socket is UDP. Checked before every datagram call: recvmsg on a
// connected TCP socket would consume stream data, and sendmsg would write
// into the stream, ignoring the address.
Status require_udp(int fd) {
    int protocol = 0;
    if (socket_int(fd, SO_PROTOCOL, protocol) != 0)
        return os_failure(errno, "getsockopt(SO_PROTOCOL)");
    if (protocol != IPPROTO_UDP)
        return Status::failure(Outcome::os_error, ENOPROTOOPT, "getsockopt(SO_PROTOCOL)",
                               clause("not a UDP socket"));
    return Status::success(0);
}

// The socket is UDP, and its address family.
Status udp_family(int fd, int& family) {
    const Status status = require_udp(fd);
    if (!status.ok())
        return status;
    if (socket_int(fd, SO_DOMAIN, family) != 0)
        return os_failure(errno, "getsockopt(SO_DOMAIN)");
    return Status::success(0);
}

// A datagram is redirected when its original destination is not the
// address the socket is bound to (a wildcard bind matches any address).
bool addressed_elsewhere(const SocketAddress& destination, const sockaddr_storage& bound) {
    SocketAddress local;
    if (!netfilter::to_socket_address(bound, local))
        return true;
    if (local.port != destination.port)
        return true;
    static const std::uint8_t kAny[16] = {};
    if (std::memcmp(local.address, kAny, local.address_size()) == 0)
        return false;
    return !netfilter::same_endpoint(local, destination);
}

} // namespace

const bool kDatagramStateOnFirstOnly = false;

Status enable_datagram_records(SocketHandle socket) {
    int family = 0;
    Status status = udp_family(socket, family);
    if (!status.ok())
        return status;
    if (family == AF_INET) {
        status = set_flag(socket, SOL_IP, IP_TRANSPARENT, "setsockopt(IP_TRANSPARENT)",
                          netfilter::kNeedsCapability);
        if (status.ok())
            status = set_flag(socket, SOL_IP, IP_RECVORIGDSTADDR, "setsockopt(IP_RECVORIGDSTADDR)");
    } else if (family == AF_INET6) {
        status = set_flag(socket, SOL_IPV6, IPV6_TRANSPARENT, "setsockopt(IPV6_TRANSPARENT)",
                          netfilter::kNeedsCapability);
        if (status.ok())
            status = set_flag(socket, SOL_IPV6, IPV6_RECVORIGDSTADDR,
                              "setsockopt(IPV6_RECVORIGDSTADDR)");
        int v6only = 0;
        socklen_t size = sizeof v6only;
        if (status.ok() && getsockopt(socket, SOL_IPV6, IPV6_V6ONLY, &v6only, &size) != 0)
            status = os_failure(errno, "getsockopt(IPV6_V6ONLY)");
        // A dual-stack socket's IPv4 datagrams answer to the IPv4 option.
        if (status.ok() && !v6only)
            status = set_flag(socket, SOL_IP, IP_RECVORIGDSTADDR, "setsockopt(IP_RECVORIGDSTADDR)");
    } else {
        status = Status::failure(Outcome::os_error, EAFNOSUPPORT, "getsockopt(SO_DOMAIN)",
                                 kNotAnInetSocket);
    }
    if (!status.ok())
        return status;
    // Kernels before 5.19 have no SO_RCVMARK: records then carry mark 0.
    const int on = 1;
    if (setsockopt(socket, SOL_SOCKET, kSoRcvmark, &on, sizeof on) != 0 && errno != ENOPROTOOPT)
        return os_failure(errno, "setsockopt(SO_RCVMARK)");
    return Status::success(0);
}

Status receive_datagram(SocketHandle socket, std::uint8_t* data, std::size_t capacity,
                        int timeout_ms, ReceivedDatagram& out, const MarkConfig& marks) {
    Status status = check_marks(marks);
    if (!status.ok())
        return status;
    status = require_udp(socket);
    if (!status.ok())
        return status;
    status = wait_ready(socket, POLLIN, timeout_ms);
    if (!status.ok())
        return status;

    sockaddr_storage source;
    iovec vector{data, capacity};
    msghdr message{};
    message.msg_name = &source;
    message.msg_namelen = sizeof source;
    message.msg_iov = &vector;
    message.msg_iovlen = 1;
    message.msg_control = out.storage.data();
    message.msg_controllen = kReceiveControlSize;
    const ssize_t received = recvmsg(socket, &message, 0);
    if (received < 0)
        return transfer_failure(errno, "recvmsg");
    out.size = static_cast<std::size_t>(received);
    out.has_original_destination = false;
    out.records = out.context = nullptr;
    out.records_size = out.context_size = 0;
    if (message.msg_flags & MSG_CTRUNC)
        return Status::failure(Outcome::os_error, EMSGSIZE, "recvmsg",
                               clause("the control data was cut (MSG_CTRUNC); the datagram is "
                                      "lost"));
    if (message.msg_namelen == 0 ||
        !netfilter::to_socket_address(source, out.source, netfilter::MappedAddresses::keep))
        return Status::failure(Outcome::os_error, EAFNOSUPPORT, "recvmsg",
                               clause("not an IPv4 or IPv6 datagram"));

    bool have_destination = false;
    SocketAddress destination;
    std::uint32_t mark = 0;
    ControlMessageReader reader(out.storage.data(), message.msg_controllen);
    ControlMessage control;
    while (reader.next(control)) {
        sockaddr_storage address{};
        if ((control.level == SOL_IP && control.type == IP_ORIGDSTADDR) ||
            (control.level == SOL_IPV6 && control.type == IPV6_ORIGDSTADDR)) {
            std::memcpy(&address, control.data, std::min(control.size, sizeof address));
            have_destination = netfilter::to_socket_address(address, destination);
        } else if (control.level == SOL_SOCKET && control.type == SO_MARK &&
                   control.size == sizeof mark) {
            std::memcpy(&mark, control.data, sizeof mark);
        }
    }
    if (reader.malformed())
        return Status::failure(Outcome::os_error, EBADMSG, "recvmsg",
                               clause("a control message overruns the control data"));
    if (!have_destination)
        return Status::success(out.size);

    sockaddr_storage bound;
    socklen_t bound_size = sizeof bound;
    if (getsockname(socket, reinterpret_cast<sockaddr*>(&bound), &bound_size) != 0)
        return os_failure(errno, "getsockname");
    if (!addressed_elsewhere(destination, bound))
        return Status::success(out.size);

    NetfilterRecord record;
    record.original_destination = destination;
    record.mark = travelling_bits(mark, marks);
    record.transparent = true;
    out.has_original_destination = true;
    out.original_destination = destination;
    // The control data has been read: its storage now holds the record.
    out.records = out.storage.data();
    out.records_size = encode_netfilter_record(record, out.storage.data());
    return Status::success(out.size);
}

Status send_datagram(SocketHandle socket, const std::uint8_t* data, std::size_t size,
                     const SocketAddress& to, const std::uint8_t* records, std::size_t records_size,
                     int timeout_ms, const MarkConfig& marks) {
    alignas(cmsghdr) std::uint8_t control[control_space(sizeof(std::uint32_t))];
    msghdr message{};
    Status status = require_udp(socket);
    if (!status.ok())
        return status;
    if (records != nullptr) {
        std::uint32_t mark = 0;
        status = upstream_mark(records, records_size, marks, mark);
        if (!status.ok())
            return status;
        message.msg_control = control;
        message.msg_controllen =
            append_control_message(control, sizeof control, 0, SOL_SOCKET, SO_MARK,
                                   reinterpret_cast<const std::uint8_t*>(&mark), sizeof mark);
    }
    status = wait_ready(socket, POLLOUT, timeout_ms);
    if (!status.ok())
        return status;

    sockaddr_storage destination;
    iovec vector{const_cast<std::uint8_t*>(data), size};
    message.msg_name = &destination;
    message.msg_namelen = netfilter::to_sockaddr(to, destination);
    message.msg_iov = &vector;
    message.msg_iovlen = 1;
    const ssize_t sent = sendmsg(socket, &message, 0);
    if (sent < 0)
        return transfer_failure(
            errno, "sendmsg", records != nullptr ? kControlMessageNeedsCapability : Explanation{});
    return Status::success(static_cast<std::size_t>(sent));
}

Status netfilter::prepare_datagram_reply_socket(SocketHandle socket) {
    int family = 0;
    Status status = udp_family(socket, family);
    if (!status.ok())
        return status;
    status = set_flag(socket, SOL_SOCKET, SO_REUSEADDR, "setsockopt(SO_REUSEADDR)");
    if (!status.ok())
        return status;
    if (family == AF_INET6)
        return set_flag(socket, SOL_IPV6, IPV6_TRANSPARENT, "setsockopt(IPV6_TRANSPARENT)",
                        netfilter::kNeedsCapability);
    return set_flag(socket, SOL_IP, IP_TRANSPARENT, "setsockopt(IP_TRANSPARENT)",
                    netfilter::kNeedsCapability);
}

} // namespace wfpredirect::core
