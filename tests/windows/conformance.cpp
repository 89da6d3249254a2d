// The Windows core under Wine: real ws2_32 sockets on loopback, each WFP
// operation through the backend with Wine's measured answers asserted
// (docs/design.md, "What Wine 8 (Debian's wine64) answers"), then the portable suites.
#include <winsock2.h>
#include <ws2tcpip.h>

#include <cstdio>
#include <cstring>
#include <string>

#include "../../csrc/core/common/upstream_socket.hpp"
#include "../../csrc/core/common/wfpsampler_context.hpp"
#include "../../csrc/core/operations.hpp"
#include "../../csrc/core/wfp/constants.hpp"
#include "../../csrc/core/wfp/ws2_32.hpp"
#include "suites.hpp"

namespace wfpredirect::tests {
namespace {

using core::ByteBuffer;
using core::MarkConfig;
using core::Outcome;
using core::SocketAddress;
using core::SocketHandle;
using core::Status;
namespace wfp = core::wfp;

constexpr WORD kWinsockVersion = MAKEWORD(2, 2);

struct LoopbackPair {
    SOCKET listener = INVALID_SOCKET;
    SOCKET client = INVALID_SOCKET;
    SOCKET accepted = INVALID_SOCKET;

    ~LoopbackPair() {
        for (SOCKET socket : {accepted, client, listener})
            if (socket != INVALID_SOCKET)
                closesocket(socket);
    }
};

bool connect_loopback_pair(LoopbackPair& pair) {
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int length = sizeof address;
    pair.listener = socket(AF_INET, SOCK_STREAM, IPPROTO_TCP);
    pair.client = socket(AF_INET, SOCK_STREAM, IPPROTO_TCP);
    if (pair.listener == INVALID_SOCKET || pair.client == INVALID_SOCKET ||
        bind(pair.listener, reinterpret_cast<sockaddr*>(&address), length) != 0 ||
        listen(pair.listener, 1) != 0 ||
        getsockname(pair.listener, reinterpret_cast<sockaddr*>(&address), &length) != 0 ||
        connect(pair.client, reinterpret_cast<sockaddr*>(&address), length) != 0)
        return false;
    pair.accepted = accept(pair.listener, nullptr, nullptr);
    return pair.accepted != INVALID_SOCKET;
}

// Wine answers every WFP IOCTL with WSAEOPNOTSUPP: the unsupported class,
// raw code kept, naming the call.
bool unsupported_by_wine(const Status& status, const char* call) {
    return status.outcome == Outcome::unsupported && status.code == wfp::kWsaEopnotsupp &&
           status.text() == call;
}

const char kRecordsCall[] = "WSAIoctl(SIO_QUERY_WFP_CONNECTION_REDIRECT_RECORDS)";
const char kContextCall[] = "WSAIoctl(SIO_QUERY_WFP_CONNECTION_REDIRECT_CONTEXT)";
const char kSetCall[] = "WSAIoctl(SIO_SET_WFP_CONNECTION_REDIRECT_RECORDS)";

void every_operation_unsupported(Checks& checks, SocketHandle socket) {
    const MarkConfig marks;
    ByteBuffer out;
    std::uint8_t buffer[64];
    SocketAddress address;
    CHECK(checks,
          unsupported_by_wine(core::query_redirect_records(socket, out, marks), kRecordsCall));
    CHECK(checks, unsupported_by_wine(
                      core::query_redirect_records_into(socket, buffer, sizeof buffer, marks),
                      kRecordsCall));
    CHECK(checks, unsupported_by_wine(core::query_redirect_records_into(socket, buffer, 1, marks),
                                      kRecordsCall));
    CHECK(checks,
          unsupported_by_wine(core::query_redirect_context(socket, out, marks), kContextCall));
    CHECK(checks, unsupported_by_wine(
                      core::query_redirect_context_into(socket, buffer, sizeof buffer, marks),
                      kContextCall));
    // SO_ORIGINAL_DST fails (WSAEINVAL), then the context query answers.
    CHECK(checks,
          unsupported_by_wine(core::original_destination(socket, address, marks), kContextCall));
}

// A set checks the socket first with real ws2_32 calls (SO_PROTOCOL_INFOW,
// SO_ACCEPTCONN, getpeername): only a new IPv4 or IPv6 socket reaches the
// IOCTL, which Wine does not support.
void set_records_on_each_kind_of_socket(Checks& checks, const LoopbackPair& pair) {
    const MarkConfig marks;
    const std::uint8_t record[16] = {1};
    const auto set = [&](SocketHandle socket) {
        return core::set_redirect_records(socket, record, sizeof record, marks);
    };
    const auto refused = [](const Status& status, std::uint32_t code, const char* why) {
        return status.outcome == Outcome::os_error && status.code == code && status.text() == why;
    };
    checks.scenario = "set records: a new TCP socket";
    const SOCKET fresh = ::socket(AF_INET6, SOCK_STREAM, IPPROTO_TCP);
    CHECK(checks, unsupported_by_wine(set(fresh), kSetCall));
    closesocket(fresh);
    checks.scenario = "set records: connected sockets";
    CHECK(checks, refused(set(pair.accepted), wfp::kWsaEisconn, core::kConnectedSocket));
    CHECK(checks, refused(set(pair.client), wfp::kWsaEisconn, core::kConnectedSocket));
    checks.scenario = "set records: a listening socket";
    CHECK(checks, refused(set(pair.listener), wfp::kWsaEinval, core::kListeningSocket));
    checks.scenario = "set records: an invalid handle";
    CHECK(checks, refused(set(INVALID_SOCKET), wfp::kWsaEnotsock, "getsockopt(SO_PROTOCOL_INFOW)"));
}

// The raw answers behind the classes, as measured (docs/design.md).
void raw_wine_answers(Checks& checks, SOCKET socket) {
    const wfp::WinsockOps& ops = core::real_winsock_ops();
    std::uint8_t out[core::kInitialQuerySize];
    for (std::uint32_t code : {wfp::kSioQueryRedirectRecords, wfp::kSioQueryRedirectContext}) {
        const wfp::WinsockAnswer answer =
            ops.ioctl(ops.context, socket, code, nullptr, 0, out, sizeof out, nullptr);
        CHECK(checks, answer.rc == SOCKET_ERROR && answer.error == wfp::kWsaEopnotsupp &&
                          answer.bytes == 0);
    }
    std::uint8_t original[wfp::kWindowsSockaddrStorageSize];
    const wfp::WinsockAnswer answer =
        ops.getsockopt(ops.context, socket, wfp::kWindowsSolIp, wfp::kWindowsSoOriginalDst,
                       original, sizeof original);
    CHECK(checks, answer.rc == SOCKET_ERROR && answer.error == wfp::kWsaEinval);
    std::uint8_t local[wfp::kWindowsSockaddrStorageSize];
    const wfp::WinsockAnswer named = ops.getsockname(ops.context, socket, local, sizeof local);
    CHECK(checks, named.rc == 0 && named.bytes == sizeof(sockaddr_in));
}

SOCKET udp_on_loopback(sockaddr_in& address) {
    address = sockaddr_in{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int length = sizeof address;
    const SOCKET socket = ::socket(AF_INET, SOCK_DGRAM, IPPROTO_UDP);
    if (socket == INVALID_SOCKET ||
        bind(socket, reinterpret_cast<sockaddr*>(&address), length) != 0 ||
        getsockname(socket, reinterpret_cast<sockaddr*>(&address), &length) != 0)
        return INVALID_SOCKET;
    return socket;
}

SocketAddress loopback(const sockaddr_in& address) {
    SocketAddress out;
    std::memcpy(out.address, &address.sin_addr, 4);
    out.port = ntohs(address.sin_port);
    return out;
}

// Wine has no WFP options, so no datagram carries a record; WSARecvMsg and
// WSASendMsg still carry loopback datagrams, and a record control message
// on WSASendMsg is accepted and ignored (docs/design.md).
void datagrams_under_wine(Checks& checks) {
    checks.scenario = "UDP pair on loopback";
    sockaddr_in receiver_address;
    sockaddr_in sender_address;
    const SOCKET receiver = udp_on_loopback(receiver_address);
    const SOCKET sender = udp_on_loopback(sender_address);
    CHECK(checks, receiver != INVALID_SOCKET && sender != INVALID_SOCKET);
    if (receiver == INVALID_SOCKET || sender == INVALID_SOCKET)
        return;
    const MarkConfig marks;

    checks.scenario = "enable_datagram_records under Wine";
    const Status enabled = core::enable_datagram_records(receiver);
    CHECK(checks, enabled.outcome == Outcome::unsupported && enabled.code == wfp::kWsaEnoprotoopt &&
                      std::strcmp(enabled.call, "setsockopt(IP_WFP_REDIRECT_RECORDS)") == 0);

    const SocketAddress to = loopback(receiver_address);
    const std::uint8_t record[] = {'W', 'F', 'P', 'R', 1};
    for (const bool with_record : {false, true}) {
        checks.scenario = with_record ? "WSASendMsg with a record control message, WSARecvMsg"
                                      : "WSASendMsg and WSARecvMsg";
        const Status sent = core::send_datagram(
            sender, reinterpret_cast<const std::uint8_t*>("hello"), 5, to,
            with_record ? record : nullptr, with_record ? sizeof record : 0, core::kNoWait, marks);
        CHECK(checks, sent.ok() && sent.size == 5);
        std::uint8_t data[32] = {};
        core::ReceivedDatagram datagram;
        const Status received =
            core::receive_datagram(receiver, data, sizeof data, 5000, datagram, marks);
        CHECK(checks, received.ok() && datagram.size == 5 && std::memcmp(data, "hello", 5) == 0);
        CHECK(checks, datagram.source == loopback(sender_address));
        CHECK(checks, datagram.records == nullptr && datagram.context == nullptr &&
                          !datagram.has_original_destination);
    }

    checks.scenario = "a timeout with nothing to receive";
    std::uint8_t data[8];
    core::ReceivedDatagram none;
    const Status waited = core::receive_datagram(receiver, data, sizeof data, 50, none, marks);
    CHECK(checks, waited.outcome == Outcome::timed_out);

    checks.scenario = "a non-blocking socket with nothing to receive";
    u_long non_blocking = 1;
    CHECK(checks, ioctlsocket(receiver, FIONBIO, &non_blocking) == 0);
    const Status empty =
        core::receive_datagram(receiver, data, sizeof data, core::kNoWait, none, marks);
    CHECK(checks, empty.outcome == Outcome::would_block && empty.code == WSAEWOULDBLOCK &&
                      std::strcmp(empty.call, "WSARecvMsg") == 0);

    closesocket(sender);
    closesocket(receiver);
}

void run_wine_suite(Checks& checks) {
    checks.scenario = "backend name";
    CHECK(checks, std::strcmp(core::kBackendName, "winsock") == 0);

    checks.scenario = "loopback TCP pair";
    LoopbackPair pair;
    const bool connected = connect_loopback_pair(pair);
    CHECK(checks, connected);
    if (!connected)
        return;
    checks.scenario = "accepted socket";
    raw_wine_answers(checks, pair.accepted);
    every_operation_unsupported(checks, pair.accepted);
    checks.scenario = "connecting socket";
    every_operation_unsupported(checks, pair.client);
    checks.scenario = "invalid handle (Wine: WSAEOPNOTSUPP, not WSAENOTSOCK)";
    every_operation_unsupported(checks, INVALID_SOCKET);
    set_records_on_each_kind_of_socket(checks, pair);
    datagrams_under_wine(checks);
}

} // namespace
} // namespace wfpredirect::tests

int main() {
    wfpredirect::tests::Checks checks;
    WSADATA data;
    const int started = WSAStartup(wfpredirect::tests::kWinsockVersion, &data);
    checks.scenario = "WSAStartup";
    CHECK(checks, started == 0);
    if (started == 0) {
        wfpredirect::tests::run_wine_suite(checks);
        WSACleanup();
    }
    wfpredirect::tests::run_scripted_stack_suite(checks);
    wfpredirect::tests::run_context_decoder_suite(checks);
    wfpredirect::tests::run_control_messages_suite(checks);
    wfpredirect::tests::run_datagram_suite(checks);
    return checks.report();
}
