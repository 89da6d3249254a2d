// The Windows core under Wine: real ws2_32 sockets on loopback, each WFP
// operation through the backend with Wine's measured answers asserted
// (DESIGN.md, "What Wine 8 answers"), then the portable suites.
#include <winsock2.h>
#include <ws2tcpip.h>

#include <cstdio>
#include <cstring>
#include <string>

#include "../../csrc/core/backend.hpp"
#include "../../csrc/core/wfp_constants.hpp"
#include "../../csrc/core/wfpsampler_context.hpp"
#include "../../csrc/core/windows/winsock_ops.hpp"
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
           status.call != nullptr && std::strcmp(status.call, call) == 0;
}

const char kRecordsCall[] = "WSAIoctl(SIO_QUERY_WFP_CONNECTION_REDIRECT_RECORDS)";
const char kContextCall[] = "WSAIoctl(SIO_QUERY_WFP_CONNECTION_REDIRECT_CONTEXT)";
const char kSetCall[] = "WSAIoctl(SIO_SET_WFP_CONNECTION_REDIRECT_RECORDS)";

void every_operation_unsupported(Checks& checks, SocketHandle socket) {
    const MarkConfig marks;
    ByteBuffer out;
    std::uint8_t buffer[64];
    const std::uint8_t record[16] = {1};
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
    CHECK(checks, unsupported_by_wine(
                      core::set_redirect_records(socket, record, sizeof record, marks), kSetCall));
    // SO_ORIGINAL_DST fails (WSAEINVAL), then the context query answers.
    CHECK(checks,
          unsupported_by_wine(core::original_destination(socket, address, marks), kContextCall));
}

// The raw answers behind the classes, as measured (DESIGN.md).
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
    return checks.report();
}
