// The Windows datagram calls against the scripted stack: which options
// enable_datagram_records sets per family, what WSARecvMsg's control
// messages become, and the WSASendMsg the core builds, byte for byte.
#include <cstring>
#include <string>
#include <vector>

#include "../../csrc/core/common/control_messages.hpp"
#include "../../csrc/core/wfp/constants.hpp"
#include "../../csrc/core/wfp/datagrams.hpp"
#include "scripted_stack.hpp"
#include "suites.hpp"
#include "windows_addresses.hpp"

namespace wfpredirect::tests {
namespace {

using core::Outcome;
using core::ReceivedDatagram;
using core::SocketAddress;
using core::Status;
namespace wfp = core::wfp;

constexpr std::uint8_t kGuard = 0xCC;
constexpr std::uint16_t kAfInet6 = 23;
constexpr std::uint16_t kAfUnix = 1;
const std::array<std::uint8_t, 4> kClient4{10, 1, 2, 3};
const std::array<std::uint8_t, 4> kOrigin4{192, 0, 2, 53};
const std::array<std::uint8_t, 16> kOrigin6{0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0,
                                            0,    0,    0,    0,    0, 0, 0, 0x35};
constexpr std::uint16_t kClientPort = 0xC351;
constexpr std::uint16_t kOriginPort = 0x0035; // 53

constexpr const char* kDatagramLost =
    "WSARecvMsg: the datagram was longer than the buffer and is lost (WSAEMSGSIZE), with the "
    "flow's redirect state if it was the flow's first; receive with a 65535-byte buffer";

bool names(const Status& status, const char* text) { return status.text() == text; }

// One control message as Windows lays it out (WSACMSGHDR), written here
// independently of the core's builder.
std::vector<std::uint8_t> wsacmsg(int level, int type, const std::vector<std::uint8_t>& data) {
    const std::size_t header = sizeof(std::size_t) + 2 * sizeof(int);
    const std::size_t length = header + data.size();
    const std::size_t align = sizeof(std::size_t);
    std::vector<std::uint8_t> out((length + align - 1) / align * align, 0);
    std::memcpy(out.data(), &length, sizeof length);
    std::memcpy(out.data() + sizeof(std::size_t), &level, sizeof level);
    std::memcpy(out.data() + sizeof(std::size_t) + sizeof(int), &type, sizeof type);
    if (!data.empty())
        std::memcpy(out.data() + header, data.data(), data.size());
    return out;
}

std::vector<std::uint8_t> concat(std::vector<std::uint8_t> a, const std::vector<std::uint8_t>& b) {
    a.insert(a.end(), b.begin(), b.end());
    return a;
}

SocketAddress address4(const std::array<std::uint8_t, 4>& bytes, std::uint16_t port) {
    SocketAddress out;
    out.version = core::IpVersion::v4;
    std::memcpy(out.address, bytes.data(), 4);
    out.port = port;
    return out;
}

void enabling(Checks& checks) {
    using Options = std::vector<std::pair<int, int>>;
    const int ip = wfp::kWindowsIpprotoIp;
    const int ipv6 = wfp::kWindowsIpprotoIpv6;
    const int records = wfp::kIpWfpRedirectRecords;
    const int context = wfp::kIpWfpRedirectContext;

    checks.scenario = "enable on an IPv4 socket";
    ScriptedStack v4(checks);
    CHECK(checks, wfp::enable_datagram_records(v4.ops(), kScriptedSocket).ok());
    CHECK(checks, (v4.options_set == Options{{ip, records}, {ip, context}}));

    checks.scenario = "enable on a dual-stack socket";
    ScriptedStack dual(checks);
    dual.family = kAfInet6;
    CHECK(checks, wfp::enable_datagram_records(dual.ops(), kScriptedSocket).ok());
    CHECK(checks, (dual.options_set ==
                   Options{{ipv6, records}, {ipv6, context}, {ip, records}, {ip, context}}));

    checks.scenario = "enable on an IPv6-only socket";
    ScriptedStack v6only(checks);
    v6only.family = kAfInet6;
    v6only.v6only = 1;
    CHECK(checks, wfp::enable_datagram_records(v6only.ops(), kScriptedSocket).ok());
    CHECK(checks, (v6only.options_set == Options{{ipv6, records}, {ipv6, context}}));

    checks.scenario = "a stack without the options";
    for (std::uint32_t error : {wfp::kWsaEnoprotoopt, wfp::kWsaEopnotsupp, wfp::kWsaEinval}) {
        ScriptedStack without(checks);
        without.setsockopt_error = error;
        const Status status = wfp::enable_datagram_records(without.ops(), kScriptedSocket);
        CHECK(checks, status.outcome == Outcome::unsupported && status.code == error &&
                          names(status, "setsockopt(IP_WFP_REDIRECT_RECORDS)"));
        CHECK(checks, without.options_set.size() == 1);
    }
    ScriptedStack without6(checks);
    without6.family = kAfInet6;
    without6.setsockopt_error = wfp::kWsaEnoprotoopt;
    const Status status6 = wfp::enable_datagram_records(without6.ops(), kScriptedSocket);
    CHECK(checks, status6.outcome == Outcome::unsupported &&
                      names(status6, "setsockopt(IPV6_WFP_REDIRECT_RECORDS)"));

    checks.scenario = "enable without rights";
    ScriptedStack denied(checks);
    denied.setsockopt_error = wfp::kWsaEacces;
    const Status refused = wfp::enable_datagram_records(denied.ops(), kScriptedSocket);
    CHECK(checks, refused.outcome == Outcome::permission_denied && refused.code == wfp::kWsaEacces);

    checks.scenario = "enable on a socket that is not IP";
    ScriptedStack unix_socket(checks);
    unix_socket.family = kAfUnix;
    const Status foreign = wfp::enable_datagram_records(unix_socket.ops(), kScriptedSocket);
    CHECK(checks, foreign.outcome == Outcome::os_error && foreign.code == wfp::kWsaEafnosupport &&
                      unix_socket.options_set.empty());
}

// A stack delivering "dns?" from 10.1.2.3 with the given control bytes.
ScriptedStack delivering(Checks& checks, std::vector<std::uint8_t> control) {
    ScriptedStack stack(checks);
    stack.datagram = {'d', 'n', 's', '?'};
    stack.source_name = windows_sockaddr_in(kClient4, kClientPort);
    stack.control = std::move(control);
    return stack;
}

void receiving(Checks& checks) {
    const int ip = wfp::kWindowsIpprotoIp;
    const std::vector<std::uint8_t> records{0xDE, 0xAD, 0xBE, 0xEF, 0x01};
    const std::vector<std::uint8_t> context = wfpsampler_context(
        windows_sockaddr_in(kOrigin4, kOriginPort), windows_sockaddr_in(kClient4, kClientPort));
    std::uint8_t data[16];

    checks.scenario = "a flow's first datagram: records, context, an unknown message";
    ScriptedStack first = delivering(
        checks,
        concat(concat(wsacmsg(ip, 99, {7, 7}), wsacmsg(ip, wfp::kIpWfpRedirectRecords, records)),
               wsacmsg(ip, wfp::kIpWfpRedirectContext, context)));
    ReceivedDatagram datagram;
    Status status =
        wfp::receive_datagram(first.ops(), kScriptedSocket, data, sizeof data, datagram);
    CHECK(checks, status.ok() && status.size == 4 && datagram.size == 4);
    CHECK(checks, std::memcmp(data, "dns?", 4) == 0);
    CHECK(checks, first.recvmsg_capacity == sizeof data);
    CHECK(checks, datagram.source == address4(kClient4, kClientPort));
    CHECK(checks, datagram.records_size == records.size() &&
                      std::memcmp(datagram.records, records.data(), records.size()) == 0);
    CHECK(checks, datagram.context_size == context.size() &&
                      std::memcmp(datagram.context, context.data(), context.size()) == 0);
    CHECK(checks, datagram.has_original_destination &&
                      datagram.original_destination == address4(kOrigin4, kOriginPort));

    checks.scenario = "a later datagram of the flow: nothing";
    ScriptedStack later = delivering(checks, {});
    ReceivedDatagram plain;
    status = wfp::receive_datagram(later.ops(), kScriptedSocket, data, sizeof data, plain);
    CHECK(checks, status.ok() && plain.records == nullptr && plain.context == nullptr &&
                      !plain.has_original_destination);

    checks.scenario = "a driver's own context: kept, no original destination";
    ScriptedStack own = delivering(
        checks, concat(wsacmsg(wfp::kWindowsIpprotoIpv6, wfp::kIpWfpRedirectRecords, records),
                       wsacmsg(wfp::kWindowsIpprotoIpv6, wfp::kIpWfpRedirectContext, {1, 2, 3})));
    ReceivedDatagram driver;
    status = wfp::receive_datagram(own.ops(), kScriptedSocket, data, sizeof data, driver);
    CHECK(checks, status.ok() && driver.records_size == records.size() &&
                      driver.context_size == 3 && !driver.has_original_destination);

    checks.scenario = "a datagram longer than the buffer";
    ScriptedStack longer = delivering(checks, {});
    std::uint8_t guarded[5] = {kGuard, 0, 0, 0, kGuard};
    ReceivedDatagram cut;
    status = wfp::receive_datagram(longer.ops(), kScriptedSocket, guarded + 1, 3, cut);
    CHECK(checks, status.outcome == Outcome::os_error && status.code == wfp::kWsaEmsgsize &&
                      longer.recvmsg_capacity == 3);
    CHECK(checks, names(status, kDatagramLost));
    CHECK(checks, guarded[0] == kGuard && guarded[4] == kGuard);

    checks.scenario = "MSG_CTRUNC";
    ScriptedStack truncated = delivering(checks, wsacmsg(ip, wfp::kIpWfpRedirectRecords, records));
    truncated.recvmsg_flags = wfp::kWindowsMsgCtrunc;
    ReceivedDatagram lost;
    status = wfp::receive_datagram(truncated.ops(), kScriptedSocket, data, sizeof data, lost);
    CHECK(checks, status.outcome == Outcome::os_error && status.code == wfp::kWsaEmsgsize &&
                      names(status, "WSARecvMsg: the control data was cut (MSG_CTRUNC); the "
                                    "datagram is lost"));

    checks.scenario = "a control message overrunning the control data";
    std::vector<std::uint8_t> overrun = wsacmsg(ip, wfp::kIpWfpRedirectRecords, records);
    const std::size_t huge = overrun.size() + 100;
    std::memcpy(overrun.data(), &huge, sizeof huge);
    ScriptedStack corrupt = delivering(checks, overrun);
    ReceivedDatagram bad;
    status = wfp::receive_datagram(corrupt.ops(), kScriptedSocket, data, sizeof data, bad);
    CHECK(checks, status.outcome == Outcome::os_error && status.code == wfp::kWsaEinval &&
                      bad.records == nullptr);

    checks.scenario = "WSARecvMsg errors";
    for (std::uint32_t error : {wfp::kWsaEwouldblock, wfp::kWsaEnotsock, wfp::kWsaEmsgsize}) {
        ScriptedStack failing = delivering(checks, {});
        failing.recvmsg_error = error;
        ReceivedDatagram none;
        status = wfp::receive_datagram(failing.ops(), kScriptedSocket, data, sizeof data, none);
        const Outcome expected =
            error == wfp::kWsaEwouldblock ? Outcome::would_block : Outcome::os_error;
        const char* call = error == wfp::kWsaEmsgsize ? kDatagramLost : "WSARecvMsg";
        CHECK(checks, status.outcome == expected && status.code == error && names(status, call));
    }
}

void sending(Checks& checks) {
    const std::vector<std::uint8_t> records{0x52, 0x45, 0x43, 0x4F, 0x52, 0x44, 0x53};
    const std::uint8_t payload[] = {'a', 'n', 's'};
    const SocketAddress origin = address4(kOrigin4, kOriginPort);

    checks.scenario = "WSASendMsg with a record, IPv4 socket";
    ScriptedStack v4(checks);
    Status status = wfp::send_datagram(v4.ops(), kScriptedSocket, payload, sizeof payload, origin,
                                       records.data(), records.size());
    CHECK(checks, status.ok() && status.size == sizeof payload && v4.sendmsg_calls == 1);
    CHECK(checks, v4.sent_name == windows_sockaddr_in(kOrigin4, kOriginPort));
    CHECK(checks, v4.sent_data == std::vector<std::uint8_t>(payload, payload + 3));
    CHECK(checks,
          v4.sent_control == wsacmsg(wfp::kWindowsIpprotoIp, wfp::kIpWfpRedirectRecords, records));

    checks.scenario = "WSASendMsg to an IPv4 peer from a dual-stack socket";
    ScriptedStack dual(checks);
    dual.family = kAfInet6;
    status = wfp::send_datagram(dual.ops(), kScriptedSocket, payload, sizeof payload, origin,
                                records.data(), records.size());
    std::array<std::uint8_t, 16> mapped{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF};
    std::memcpy(mapped.data() + 12, kOrigin4.data(), 4);
    CHECK(checks, status.ok() && dual.sent_name == windows_sockaddr_in6(mapped, kOriginPort, 0, 0));
    CHECK(checks, dual.sent_control ==
                      wsacmsg(wfp::kWindowsIpprotoIp, wfp::kIpWfpRedirectRecords, records));

    checks.scenario = "WSASendMsg to an IPv6 peer";
    ScriptedStack v6(checks);
    v6.family = kAfInet6;
    SocketAddress origin6;
    origin6.version = core::IpVersion::v6;
    std::memcpy(origin6.address, kOrigin6.data(), 16);
    origin6.port = kOriginPort;
    origin6.flowinfo = 0x12345;
    origin6.scope_id = 7;
    status = wfp::send_datagram(v6.ops(), kScriptedSocket, payload, sizeof payload, origin6,
                                records.data(), records.size());
    CHECK(checks,
          status.ok() && v6.sent_name == windows_sockaddr_in6(kOrigin6, kOriginPort, 0x12345, 7));
    CHECK(checks, v6.sent_control ==
                      wsacmsg(wfp::kWindowsIpprotoIpv6, wfp::kIpWfpRedirectRecords, records));
    // An IPv6 peer needs no family lookup.
    CHECK(checks, v6.getsockopt_levels.empty());

    checks.scenario = "WSASendMsg without a record";
    ScriptedStack bare(checks);
    status = wfp::send_datagram(bare.ops(), kScriptedSocket, payload, sizeof payload, origin,
                                nullptr, 0);
    CHECK(checks, status.ok() && bare.sent_control.empty() && bare.sendmsg_calls == 1);

    checks.scenario = "WSASendMsg refused";
    ScriptedStack denied(checks);
    denied.sendmsg_error = wfp::kWsaEacces;
    status = wfp::send_datagram(denied.ops(), kScriptedSocket, payload, sizeof payload, origin,
                                records.data(), records.size());
    CHECK(checks, status.outcome == Outcome::permission_denied && status.code == wfp::kWsaEacces &&
                      names(status, "WSASendMsg"));
}

} // namespace

void run_datagram_suite(Checks& checks) {
    enabling(checks);
    receiving(checks);
    sending(checks);
}

} // namespace wfpredirect::tests
