// The WFP operations against the scripted stack: every too-small variant at
// every record size, exact fits, 0-byte success, the context rule, the error
// classes, set records and original destination.
#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

#include "../../csrc/core/common/byte_buffer.hpp"
#include "../../csrc/core/common/upstream_socket.hpp"
#include "../../csrc/core/common/wfpsampler_context.hpp"
#include "../../csrc/core/wfp/connections.hpp"
#include "../../csrc/core/wfp/constants.hpp"
#include "scripted_stack.hpp"
#include "suites.hpp"
#include "windows_addresses.hpp"

namespace wfpredirect::tests {
namespace {

using core::ByteBuffer;
using core::kInitialQuerySize;
using core::kMaxQuerySize;
using core::Outcome;
using core::SocketAddress;
using core::Status;
using namespace core::wfp;

const Refusal kInsufficientWithSize{kErrorInsufficientBuffer, ReportedSize::required,
                                    "ERROR_INSUFFICIENT_BUFFER with the size"};
const Refusal kInsufficientWithZero{kErrorInsufficientBuffer, ReportedSize::zero,
                                    "ERROR_INSUFFICIENT_BUFFER with 0"};
const Refusal kFaultWithZero{kWsaEfault, ReportedSize::zero, "WSAEFAULT with 0"};
const Refusal kInvalidWithZero{kWsaEinval, ReportedSize::zero, "WSAEINVAL with 0"};

const Refusal kRefusals[] = {
    kInsufficientWithSize,
    kInsufficientWithZero,
    {kErrorInsufficientBuffer, ReportedSize::one, "ERROR_INSUFFICIENT_BUFFER with 1"},
    {kWsaEfault, ReportedSize::required, "WSAEFAULT with the size"},
    kFaultWithZero,
    {kWsaEnobufs, ReportedSize::required, "WSAENOBUFS with the size"},
    {kWsaEnobufs, ReportedSize::zero, "WSAENOBUFS with 0"},
    {kWsaEinval, ReportedSize::required, "WSAEINVAL with the size"},
    {kWsaEinval, ReportedSize::one, "WSAEINVAL with 1"},
    kInvalidWithZero,
};

const std::size_t kRecordSizes[] = {16, 1024, 1025, 8192, 65536, 65537};

const std::uint32_t kNotFoundCodes[] = {kWsaEinval, kFwpENotFound, kErrorNotFound};

// Bytes around a caller's buffer that nothing may touch.
constexpr std::size_t kGuardSize = 64;
constexpr std::uint8_t kGuardByte = 0x5A;

std::vector<std::uint8_t> pattern(std::size_t size) {
    std::vector<std::uint8_t> bytes(size);
    for (std::size_t i = 0; i < size; ++i)
        bytes[i] = static_cast<std::uint8_t>(i * 7 + size);
    return bytes;
}

bool ambiguous(const Refusal& refusal) {
    return refusal.error == kWsaEinval && refusal.reported == ReportedSize::zero;
}

bool names(const Status& status, const char* text) {
    return status.text().find(text) != std::string::npos;
}

std::vector<std::uint32_t> sizes_of(const std::vector<IoctlCall>& calls, std::uint32_t code) {
    std::vector<std::uint32_t> sizes;
    for (const IoctlCall& call : calls)
        if (call.code == code)
            sizes.push_back(call.out_size);
    return sizes;
}

std::string describe(const char* what, std::size_t size, const Refusal& refusal) {
    return std::string(what) + ", " + std::to_string(size) + " bytes, refused with " + refusal.name;
}

// What docs/design.md promises for one query: the buffer sizes tried and the end.
struct Expected {
    std::vector<std::uint32_t> sizes;
    Outcome outcome = Outcome::ok;
};

// Start at 1 KiB; grow to a reported size, else double, to the 64 KiB cap; a
// WSAEINVAL with 0 gets one try at the cap, after which it means "not
// redirected" (so a record over the cap refused that way reads as not
// redirected: the documented ambiguity).
Expected expected_growth(std::size_t record, const Refusal& refusal) {
    Expected expected;
    std::size_t size = kInitialQuerySize;
    expected.sizes.push_back(static_cast<std::uint32_t>(size));
    while (record > size) {
        if (ambiguous(refusal)) {
            if (size == kMaxQuerySize) {
                expected.outcome = Outcome::not_redirected;
                return expected;
            }
            size = kMaxQuerySize;
        } else if (refusal.reported == ReportedSize::required) {
            if (record > kMaxQuerySize) {
                expected.outcome = Outcome::os_error;
                return expected;
            }
            size = record;
        } else {
            if (size == kMaxQuerySize) {
                expected.outcome = Outcome::os_error;
                return expected;
            }
            size *= 2;
        }
        expected.sizes.push_back(static_cast<std::uint32_t>(size));
    }
    return expected;
}

void check_failure_end(Checks& checks, const Status& status, const Expected& expected,
                       const Refusal& refusal) {
    CHECK(checks, status.outcome == expected.outcome);
    CHECK(checks, status.code == refusal.error);
    if (expected.outcome == Outcome::os_error)
        CHECK(checks, names(status, "exceed the 64 KiB cap"));
    else
        CHECK(checks, names(status, "WSAIoctl(SIO_QUERY_WFP_CONNECTION_REDIRECT_RECORDS)"));
}

void records_grow_to_fit(Checks& checks, std::size_t record, const Refusal& refusal) {
    checks.scenario = describe("records query", record, refusal);
    ScriptedStack stack(checks);
    stack.records = pattern(record);
    stack.refusal = refusal;
    ByteBuffer out;
    const Status status = query_redirect_records(stack.ops(), kScriptedSocket, out);
    const Expected expected = expected_growth(record, refusal);
    CHECK(checks, sizes_of(stack.ioctl_calls, kSioQueryRedirectRecords) == expected.sizes);
    CHECK(checks, stack.ioctl_calls.size() == expected.sizes.size());
    if (expected.outcome != Outcome::ok) {
        check_failure_end(checks, status, expected, refusal);
        return;
    }
    CHECK(checks, status.ok());
    CHECK(checks, status.size == record);
    CHECK(checks, status.size <= out.capacity() &&
                      std::memcmp(out.data(), stack.records->data(), record) == 0);
}

// What the _into variant promises: one call in the caller's buffer (when it
// holds at least a ULONG), then at most one probe at the cap.
Expected expected_into(std::size_t record, const Refusal& refusal, std::size_t capacity) {
    Expected expected;
    if (capacity >= kMinQueryOutputSize) {
        const std::size_t size = std::min(capacity, kMaxQuerySize);
        expected.sizes.push_back(static_cast<std::uint32_t>(size));
        if (record <= size)
            return expected;
        const bool over_cap_reported =
            refusal.reported == ReportedSize::required && record > kMaxQuerySize;
        if (size == kMaxQuerySize || over_cap_reported) {
            expected.outcome = ambiguous(refusal) ? Outcome::not_redirected : Outcome::os_error;
            return expected;
        }
    }
    expected.sizes.push_back(static_cast<std::uint32_t>(kMaxQuerySize));
    if (record > kMaxQuerySize)
        expected.outcome = ambiguous(refusal) ? Outcome::not_redirected : Outcome::os_error;
    else if (record > capacity)
        expected.outcome = Outcome::buffer_too_small;
    return expected;
}

void records_into_caller_buffer(Checks& checks, std::size_t record, const Refusal& refusal,
                                std::size_t capacity) {
    checks.scenario =
        describe("records into", record, refusal) + ", capacity " + std::to_string(capacity);
    ScriptedStack stack(checks);
    stack.records = pattern(record);
    stack.refusal = refusal;
    std::vector<std::uint8_t> memory(kGuardSize + capacity + kGuardSize, kGuardByte);
    std::uint8_t* buffer = memory.data() + kGuardSize;
    const Status status =
        query_redirect_records_into(stack.ops(), kScriptedSocket, buffer, capacity);
    const Expected expected = expected_into(record, refusal, capacity);
    CHECK(checks, sizes_of(stack.ioctl_calls, kSioQueryRedirectRecords) == expected.sizes);
    CHECK(checks, stack.ioctl_calls.size() == expected.sizes.size());
    const std::vector<std::uint8_t> guard(kGuardSize, kGuardByte);
    CHECK(checks, std::equal(guard.begin(), guard.end(), memory.begin()));
    CHECK(checks, std::equal(guard.begin(), guard.end(), memory.end() - kGuardSize));
    switch (expected.outcome) {
    case Outcome::ok:
        CHECK(checks, status.ok() && status.size == record);
        CHECK(checks, std::memcmp(buffer, stack.records->data(), record) == 0);
        break;
    case Outcome::buffer_too_small:
        CHECK(checks, status.outcome == Outcome::buffer_too_small);
        CHECK(checks, status.size == record);
        CHECK(checks, status.code == kErrorInsufficientBuffer);
        break;
    default:
        check_failure_end(checks, status, expected, refusal);
    }
}

void every_record_size_and_refusal(Checks& checks) {
    for (std::size_t record : kRecordSizes) {
        for (const Refusal& refusal : kRefusals) {
            records_grow_to_fit(checks, record, refusal);
            records_into_caller_buffer(checks, record, refusal, record);     // exact fit
            records_into_caller_buffer(checks, record, refusal, record - 1); // one short
            records_into_caller_buffer(checks, record, refusal, kMinQueryOutputSize - 1);
        }
    }
}

// The literal sequences behind expected_growth, for the record sizes that
// matter most.
void growth_spot_checks(Checks& checks) {
    const std::size_t kEightKiB = 8192;
    const auto sizes_for = [&](std::size_t record, const Refusal& refusal) {
        ScriptedStack stack(checks);
        stack.records = pattern(record);
        stack.refusal = refusal;
        ByteBuffer out;
        query_redirect_records(stack.ops(), kScriptedSocket, out);
        return sizes_of(stack.ioctl_calls, kSioQueryRedirectRecords);
    };
    checks.scenario = "growth spot checks";
    CHECK(checks,
          sizes_for(kEightKiB, kInsufficientWithSize) == (std::vector<std::uint32_t>{1024, 8192}));
    CHECK(checks, sizes_for(kEightKiB, kFaultWithZero) ==
                      (std::vector<std::uint32_t>{1024, 2048, 4096, 8192}));
    CHECK(checks,
          sizes_for(kEightKiB, kInvalidWithZero) == (std::vector<std::uint32_t>{1024, 65536}));
    CHECK(checks, sizes_for(65537, kInsufficientWithSize) == (std::vector<std::uint32_t>{1024}));
    CHECK(checks, sizes_for(65537, kInsufficientWithZero) ==
                      (std::vector<std::uint32_t>{1024, 2048, 4096, 8192, 16384, 32768, 65536}));
}

void zero_byte_success_is_an_error(Checks& checks) {
    checks.scenario = "0-byte success";
    ScriptedStack stack(checks);
    stack.forced_answer = WinsockAnswer{0, 0, 0};
    ByteBuffer out;
    Status status = query_redirect_records(stack.ops(), kScriptedSocket, out);
    CHECK(checks, status.outcome == Outcome::os_error && status.code == 0);
    CHECK(checks, names(status, "succeeded with 0 bytes"));
    std::uint8_t buffer[16];
    status = query_redirect_records_into(stack.ops(), kScriptedSocket, buffer, sizeof buffer);
    CHECK(checks, status.outcome == Outcome::os_error && names(status, "succeeded with 0 bytes"));
    status = query_redirect_context(stack.ops(), kScriptedSocket, out);
    CHECK(checks,
          status.outcome == Outcome::os_error && names(status, "CONTEXT) succeeded with 0"));
    CHECK(checks, stack.ioctl_calls.size() == 3);
}

void overlong_success_is_an_error(Checks& checks) {
    checks.scenario = "success reporting more bytes than the buffer";
    ScriptedStack stack(checks);
    stack.forced_answer = WinsockAnswer{0, 0, static_cast<std::uint32_t>(kInitialQuerySize + 1)};
    ByteBuffer out;
    const Status status = query_redirect_records(stack.ops(), kScriptedSocket, out);
    CHECK(checks, status.outcome == Outcome::os_error && status.code == 0);
    CHECK(checks, names(status, "more bytes than the buffer holds"));
}

// The expected probe for an absent record: WSAEINVAL with 0 is retried once
// at the cap; the other not-found codes are final.
std::vector<std::uint32_t> absent_sizes(std::uint32_t code, std::uint32_t first) {
    if (code == kWsaEinval)
        return {first, static_cast<std::uint32_t>(kMaxQuerySize)};
    return {first};
}

void not_redirected_under_each_code(Checks& checks) {
    for (std::uint32_t code : kNotFoundCodes) {
        checks.scenario = "no records, answered " + std::to_string(code);
        ScriptedStack stack(checks);
        stack.not_found_error = code;
        ByteBuffer out;
        Status status = query_redirect_records(stack.ops(), kScriptedSocket, out);
        CHECK(checks, status.outcome == Outcome::not_redirected && status.code == code);
        CHECK(checks, sizes_of(stack.ioctl_calls, kSioQueryRedirectRecords) ==
                          absent_sizes(code, kInitialQuerySize));

        stack.ioctl_calls.clear();
        std::uint8_t buffer[64];
        status = query_redirect_records_into(stack.ops(), kScriptedSocket, buffer, sizeof buffer);
        CHECK(checks, status.outcome == Outcome::not_redirected && status.code == code);
        CHECK(checks, sizes_of(stack.ioctl_calls, kSioQueryRedirectRecords) ==
                          absent_sizes(code, sizeof buffer));

        stack.ioctl_calls.clear();
        status = query_redirect_context(stack.ops(), kScriptedSocket, out);
        CHECK(checks, status.outcome == Outcome::not_redirected && status.code == code);
        CHECK(checks, names(status, "REDIRECT_CONTEXT"));
        CHECK(checks, sizes_of(stack.ioctl_calls, kSioQueryRedirectContext) ==
                          absent_sizes(code, kInitialQuerySize));
        CHECK(checks, sizes_of(stack.ioctl_calls, kSioQueryRedirectRecords) ==
                          absent_sizes(code, kInitialQuerySize));

        status = query_redirect_context_into(stack.ops(), kScriptedSocket, buffer, sizeof buffer);
        CHECK(checks, status.outcome == Outcome::not_redirected && status.code == code);
    }
}

void no_context_with_records(Checks& checks) {
    for (std::uint32_t code : kNotFoundCodes) {
        checks.scenario = "records but no context, answered " + std::to_string(code);
        ScriptedStack stack(checks);
        stack.records = pattern(16);
        stack.not_found_error = code;
        ByteBuffer out;
        Status status = query_redirect_context(stack.ops(), kScriptedSocket, out);
        CHECK(checks, status.ok() && status.size == 0);
        CHECK(checks, sizes_of(stack.ioctl_calls, kSioQueryRedirectContext) ==
                          absent_sizes(code, kInitialQuerySize));
        CHECK(checks, sizes_of(stack.ioctl_calls, kSioQueryRedirectRecords) ==
                          (std::vector<std::uint32_t>{kInitialQuerySize}));

        std::uint8_t buffer[64];
        status = query_redirect_context_into(stack.ops(), kScriptedSocket, buffer, sizeof buffer);
        CHECK(checks, status.ok() && status.size == 0);
    }
}

void context_is_returned(Checks& checks) {
    checks.scenario = "a WFPSampler context, and an 8 KiB one refused with WSAEINVAL 0";
    ScriptedStack stack(checks);
    stack.records = pattern(16);
    stack.context = wfpsampler_context(windows_sockaddr_in({192, 0, 2, 1}, 80),
                                       windows_sockaddr_in({10, 0, 0, 1}, 4000));
    ByteBuffer out;
    Status status = query_redirect_context(stack.ops(), kScriptedSocket, out);
    CHECK(checks, status.ok() && status.size == kWfpSamplerContextSize);
    CHECK(checks, std::memcmp(out.data(), stack.context->data(), kWfpSamplerContextSize) == 0);
    CHECK(checks, sizes_of(stack.ioctl_calls, kSioQueryRedirectRecords).empty());

    stack.context = pattern(8192);
    stack.refusal = kInvalidWithZero;
    status = query_redirect_context(stack.ops(), kScriptedSocket, out);
    CHECK(checks, status.ok() && status.size == 8192);
    CHECK(checks, std::memcmp(out.data(), stack.context->data(), 8192) == 0);

    std::uint8_t small[16];
    status = query_redirect_context_into(stack.ops(), kScriptedSocket, small, sizeof small);
    CHECK(checks, status.outcome == Outcome::buffer_too_small && status.size == 8192);
}

// Answers every operation classifies the same way, code kept.
void error_classes(Checks& checks) {
    struct Case {
        std::uint32_t error;
        Outcome outcome;
    };
    const Case cases[] = {
        {kWsaEopnotsupp, Outcome::unsupported},  {kWsaEacces, Outcome::permission_denied},
        {kWsaEnotsock, Outcome::os_error},       {kFwpENotFound, Outcome::not_redirected},
        {kWsaEnotconn, Outcome::not_redirected},
    };
    for (const Case& c : cases) {
        checks.scenario = "every query answered " + std::to_string(c.error);
        ScriptedStack stack(checks);
        stack.forced_answer = WinsockAnswer{kSocketError, c.error, 0};
        ByteBuffer out;
        std::uint8_t buffer[32];
        const Status statuses[] = {
            query_redirect_records(stack.ops(), kScriptedSocket, out),
            query_redirect_records_into(stack.ops(), kScriptedSocket, buffer, sizeof buffer),
            query_redirect_context(stack.ops(), kScriptedSocket, out),
            query_redirect_context_into(stack.ops(), kScriptedSocket, buffer, sizeof buffer),
        };
        for (const Status& status : statuses)
            CHECK(checks, status.outcome == c.outcome && status.code == c.error);
        CHECK(checks, names(statuses[0], "WSAIoctl(SIO_QUERY_WFP_CONNECTION_REDIRECT_RECORDS)"));
    }
}

void set_records(Checks& checks) {
    checks.scenario = "set records";
    ScriptedStack stack(checks);
    const std::vector<std::uint8_t> record = pattern(1025);
    Status status =
        set_redirect_records(stack.ops(), kScriptedSocket, record.data(), record.size());
    CHECK(checks, status.ok() && status.size == 0);
    CHECK(checks, stack.set_records == record);
    CHECK(checks,
          stack.ioctl_calls.size() == 1 && stack.ioctl_calls[0].code == kSioSetRedirectRecords);

    checks.scenario = "set records without rights";
    stack.set_error = kWsaEacces;
    status = set_redirect_records(stack.ops(), kScriptedSocket, record.data(), record.size());
    CHECK(checks, status.outcome == Outcome::permission_denied && status.code == kWsaEacces);
    CHECK(checks, names(status, "WSAIoctl(SIO_SET_WFP_CONNECTION_REDIRECT_RECORDS) needs "
                                "administrator rights"));

    checks.scenario = "set records, WSAEINVAL is not 'not redirected'";
    stack.set_error = kWsaEinval;
    status = set_redirect_records(stack.ops(), kScriptedSocket, record.data(), record.size());
    CHECK(checks, status.outcome == Outcome::os_error && status.code == kWsaEinval);
}

// Records go on a new IPv4 or IPv6 socket before it connects: anything else
// is refused before the IOCTL, naming the state.
void set_records_refuses_other_sockets(Checks& checks) {
    const std::vector<std::uint8_t> record = pattern(40);
    const struct {
        const char* scenario;
        std::uint16_t family;
        std::uint32_t listening;
        bool connected;
        std::uint32_t error;
        const char* why;
    } cases[] = {
        {"set records on an AF_UNIX socket", 1, 0, false, kWsaEafnosupport, core::kNotAnInetSocket},
        {"set records on a listening socket", kWindowsAfInet, 1, false, kWsaEinval,
         core::kListeningSocket},
        {"set records on a connected socket", kWindowsAfInet6, 0, true, kWsaEisconn,
         core::kConnectedSocket},
    };
    for (const auto& c : cases) {
        checks.scenario = c.scenario;
        ScriptedStack stack(checks);
        stack.family = c.family;
        stack.listening = c.listening;
        if (c.connected)
            stack.peer_address = windows_sockaddr_in({127, 0, 0, 1}, 50000);
        const Status status =
            set_redirect_records(stack.ops(), kScriptedSocket, record.data(), record.size());
        CHECK(checks, status.outcome == Outcome::os_error && status.code == c.error);
        CHECK(checks, names(status, c.why));
        CHECK(checks, stack.ioctl_calls.empty() && stack.set_records.empty());
    }
}

void original_destination_sources(Checks& checks) {
    const std::array<std::uint8_t, 4> origin{192, 0, 2, 80};
    const std::array<std::uint8_t, 16> origin6{0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0,
                                               0,    0,    0,    0,    0, 0, 0, 0x80};
    const auto proxy_local = windows_sockaddr_in({127, 0, 0, 1}, 15001);
    const auto proxy_local6 =
        windows_sockaddr_in6({0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1}, 15001, 0, 0);
    SocketAddress out;

    checks.scenario = "original destination from SO_ORIGINAL_DST (IPv4)";
    ScriptedStack v4(checks);
    v4.local_address = proxy_local;
    v4.original_dst = windows_sockaddr_in(origin, 443);
    Status status = original_destination(v4.ops(), kScriptedSocket, out);
    CHECK(checks, status.ok());
    CHECK(checks, out.version == core::IpVersion::v4 && out.port == 443 &&
                      std::memcmp(out.address, origin.data(), 4) == 0);
    CHECK(checks, v4.getsockopt_levels == std::vector<int>{kWindowsSolIp});
    CHECK(checks, v4.ioctl_calls.empty());

    checks.scenario = "original destination from SO_ORIGINAL_DST (IPv6)";
    ScriptedStack v6(checks);
    v6.local_address = proxy_local6;
    v6.original_dst = windows_sockaddr_in6(origin6, 443, 0, 0);
    status = original_destination(v6.ops(), kScriptedSocket, out);
    CHECK(checks, status.ok());
    CHECK(checks, out.version == core::IpVersion::v6 && out.port == 443 &&
                      std::memcmp(out.address, origin6.data(), 16) == 0);
    CHECK(checks, v6.getsockopt_levels == std::vector<int>{kWindowsSolIpv6});

    checks.scenario = "original destination from the WFPSampler context";
    ScriptedStack sampler(checks);
    sampler.local_address = proxy_local;
    sampler.original_dst_error = kWsaEinval;
    sampler.records = pattern(16);
    sampler.context = wfpsampler_context(windows_sockaddr_in(origin, 8443), proxy_local);
    status = original_destination(sampler.ops(), kScriptedSocket, out);
    CHECK(checks, status.ok());
    CHECK(checks, out.port == 8443 && std::memcmp(out.address, origin.data(), 4) == 0);

    checks.scenario = "original destination: redirected, no context";
    ScriptedStack unknown(checks);
    unknown.local_address = proxy_local;
    unknown.original_dst_error = kWsaEinval;
    unknown.records = pattern(16);
    unknown.not_found_error = kFwpENotFound;
    status = original_destination(unknown.ops(), kScriptedSocket, out);
    CHECK(checks, status.outcome == Outcome::unsupported && status.code == kWsaEinval);
    CHECK(checks, names(status, "not a WFPSampler context"));

    checks.scenario = "original destination: some other driver's context";
    unknown.context = pattern(16);
    status = original_destination(unknown.ops(), kScriptedSocket, out);
    CHECK(checks, status.outcome == Outcome::unsupported && status.code == kWsaEinval);

    checks.scenario = "original destination: not redirected";
    ScriptedStack plain(checks);
    plain.local_address = proxy_local;
    plain.original_dst_error = kWsaEinval;
    plain.not_found_error = kErrorNotFound;
    status = original_destination(plain.ops(), kScriptedSocket, out);
    CHECK(checks, status.outcome == Outcome::not_redirected && status.code == kErrorNotFound);
}

// ---- query_connection_state: the fused pass -----------------------------

using Calls = std::vector<std::string>;

const Calls kSoOriginalDstCalls{"getsockname", "SO_ORIGINAL_DST"};

Calls then(Calls first, const Calls& rest) {
    first.insert(first.end(), rest.begin(), rest.end());
    return first;
}

bool holds(const ByteBuffer& buffer, std::size_t size, const std::vector<std::uint8_t>& bytes) {
    return size == bytes.size() && std::memcmp(buffer.data(), bytes.data(), size) == 0;
}

// A redirected IPv4 connection from 127.0.0.1:50000 to the proxy at
// 127.0.0.1:15001, originally addressed to 192.0.2.80:443.
struct FusedScene {
    std::array<std::uint8_t, 4> origin{192, 0, 2, 80};
    std::vector<std::uint8_t> local = windows_sockaddr_in({127, 0, 0, 1}, 15001);
    std::vector<std::uint8_t> peer = windows_sockaddr_in({127, 0, 0, 1}, 50000);

    void redirect(ScriptedStack& stack, bool original_dst_option) const {
        stack.local_address = local;
        stack.peer_address = peer;
        stack.records = pattern(16);
        stack.not_found_error = kFwpENotFound;
        if (original_dst_option)
            stack.original_dst = windows_sockaddr_in(origin, 443);
        else
            stack.original_dst_error = kWsaEinval;
    }
};

bool is_origin(const core::ConnectionState& state, const FusedScene& scene, std::uint16_t port) {
    return state.has_original_destination &&
           state.original_destination.version == core::IpVersion::v4 &&
           state.original_destination.port == port &&
           std::memcmp(state.original_destination.address, scene.origin.data(), 4) == 0;
}

bool has_scene_peer(const core::ConnectionState& state) {
    static constexpr std::uint8_t kLoopback[4] = {127, 0, 0, 1};
    return state.has_peer && state.peer.port == 50000 &&
           std::memcmp(state.peer.address, kLoopback, 4) == 0 && !state.has_mark;
}

void fused_with_so_original_dst(Checks& checks) {
    const FusedScene scene;
    checks.scenario = "fused: SO_ORIGINAL_DST answers, records and a WFPSampler context";
    ScriptedStack stack(checks);
    scene.redirect(stack, true);
    stack.context = wfpsampler_context(windows_sockaddr_in(scene.origin, 8443), scene.local);
    OriginalDstSupport support;
    core::ConnectionState state;
    query_connection_state(stack.ops(), kScriptedSocket, support, state);
    CHECK(checks, stack.calls ==
                      then(kSoOriginalDstCalls, {"records 1024", "context 1024", "getpeername"}));
    CHECK(checks, state.failure.ok() && is_origin(state, scene, 443) && has_scene_peer(state));
    CHECK(checks, state.has_records && holds(state.records, state.records_size, *stack.records));
    CHECK(checks, state.has_context && holds(state.context, state.context_size, *stack.context));
    CHECK(checks, support.lacking_code() == 0);

    // The single calls agree, each asking again.
    SocketAddress single;
    CHECK(checks, original_destination(stack.ops(), kScriptedSocket, single).ok() &&
                      single == state.original_destination);

    checks.scenario = "fused: SO_ORIGINAL_DST answers, records, no context";
    ScriptedStack bare(checks);
    scene.redirect(bare, true);
    core::ConnectionState plain;
    query_connection_state(bare.ops(), kScriptedSocket, support, plain);
    CHECK(checks,
          bare.calls == then(kSoOriginalDstCalls, {"records 1024", "context 1024", "getpeername"}));
    CHECK(checks, plain.failure.ok() && is_origin(plain, scene, 443) && plain.has_records &&
                      !plain.has_context);
}

void fused_without_so_original_dst(Checks& checks) {
    const FusedScene scene;
    for (std::uint32_t lacking : {kWsaEinval, kWsaEnoprotoopt}) {
        checks.scenario = "fused: SO_ORIGINAL_DST lacking (" + std::to_string(lacking) +
                          "), asked once per process";
        OriginalDstSupport support;
        for (int connection = 0; connection < 3; ++connection) {
            ScriptedStack stack(checks);
            scene.redirect(stack, false);
            stack.original_dst_error = lacking;
            stack.context =
                wfpsampler_context(windows_sockaddr_in(scene.origin, 8443), scene.local);
            core::ConnectionState state;
            query_connection_state(stack.ops(), kScriptedSocket, support, state);
            const Calls queries{"context 1024", "records 1024", "getpeername"};
            CHECK(checks,
                  stack.calls == (connection == 0 ? then(kSoOriginalDstCalls, queries) : queries));
            CHECK(checks,
                  state.failure.ok() && is_origin(state, scene, 8443) && has_scene_peer(state));
            CHECK(checks, state.has_records && state.has_context &&
                              holds(state.context, state.context_size, *stack.context));
            CHECK(checks, support.lacking_code() == lacking);
        }
        checks.scenario += ", then a context of another driver";
        ScriptedStack other(checks);
        scene.redirect(other, false);
        other.context = pattern(40);
        core::ConnectionState state;
        query_connection_state(other.ops(), kScriptedSocket, support, state);
        CHECK(checks, other.calls == (Calls{"context 1024", "records 1024", "getpeername"}));
        CHECK(checks, state.failure.ok() && !state.has_original_destination && state.has_records &&
                          state.has_context);
    }

    checks.scenario = "fused: SO_ORIGINAL_DST lacking, redirected without a context";
    OriginalDstSupport support;
    ScriptedStack stack(checks);
    scene.redirect(stack, false);
    core::ConnectionState state;
    query_connection_state(stack.ops(), kScriptedSocket, support, state);
    CHECK(checks, stack.calls ==
                      then(kSoOriginalDstCalls, {"context 1024", "records 1024", "getpeername"}));
    CHECK(checks, state.failure.ok() && !state.has_original_destination && state.has_records &&
                      !state.has_context);
    CHECK(checks, support.lacking_code() == kWsaEinval);
}

// Only a redirected connection shows the option missing, and only the
// answers of a build without it count.
void fused_keeps_asking_so_original_dst(Checks& checks) {
    const FusedScene scene;
    checks.scenario = "fused: not redirected, SO_ORIGINAL_DST failing";
    OriginalDstSupport support;
    for (int connection = 0; connection < 2; ++connection) {
        ScriptedStack stack(checks);
        stack.local_address = scene.local;
        stack.peer_address = scene.peer;
        stack.original_dst_error = kWsaEinval;
        stack.not_found_error = kWsaEinval; // ambiguous: each query retried at the cap
        core::ConnectionState state;
        query_connection_state(stack.ops(), kScriptedSocket, support, state);
        CHECK(checks, stack.calls == then(kSoOriginalDstCalls,
                                          {"context 1024", "context 65536", "records 1024",
                                           "records 65536", "getpeername"}));
        CHECK(checks, state.failure.ok() && !state.has_original_destination && !state.has_records &&
                          !state.has_context && has_scene_peer(state));
        CHECK(checks, support.lacking_code() == 0);
    }

    checks.scenario = "fused: redirected, SO_ORIGINAL_DST failing otherwise (WSAENOTCONN)";
    for (int connection = 0; connection < 2; ++connection) {
        ScriptedStack stack(checks);
        scene.redirect(stack, false);
        stack.original_dst_error = kWsaEnotconn;
        core::ConnectionState state;
        query_connection_state(stack.ops(), kScriptedSocket, support, state);
        CHECK(checks, stack.calls == then(kSoOriginalDstCalls,
                                          {"context 1024", "records 1024", "getpeername"}));
        CHECK(checks, support.lacking_code() == 0);
    }
}

// The buffer rules still hold: a query grows only as the stack asks.
void fused_too_small_answers(Checks& checks) {
    const FusedScene scene;
    checks.scenario = "fused: an 8 KiB record and a 4 KiB context, each refused with its size";
    ScriptedStack stack(checks);
    scene.redirect(stack, true);
    stack.records = pattern(8192);
    stack.context = pattern(4096);
    stack.refusal = kInsufficientWithSize;
    OriginalDstSupport support;
    core::ConnectionState state;
    query_connection_state(stack.ops(), kScriptedSocket, support, state);
    CHECK(checks,
          stack.calls == then(kSoOriginalDstCalls, {"records 1024", "records 8192", "context 1024",
                                                    "context 4096", "getpeername"}));
    CHECK(checks, state.failure.ok() && holds(state.records, state.records_size, *stack.records) &&
                      holds(state.context, state.context_size, *stack.context));

    checks.scenario = "fused: a 4 KiB context refused with WSAEINVAL and 0";
    ScriptedStack ambiguous(checks);
    scene.redirect(ambiguous, true);
    ambiguous.context = pattern(4096);
    ambiguous.refusal = kInvalidWithZero;
    core::ConnectionState grown;
    query_connection_state(ambiguous.ops(), kScriptedSocket, support, grown);
    CHECK(checks, ambiguous.calls == then(kSoOriginalDstCalls, {"records 1024", "context 1024",
                                                                "context 65536", "getpeername"}));
    CHECK(checks,
          grown.failure.ok() && holds(grown.context, grown.context_size, *ambiguous.context));
}

// A failure is named after the single query that reports it, the pieces
// after it are not asked, and the peer is still read.
void fused_failures_name_their_query(Checks& checks) {
    const FusedScene scene;
    const struct {
        const char* scenario;
        bool original_dst_option;
        std::uint32_t records_error;
        std::uint32_t context_error;
        Calls queries;
        core::Query failed;
        bool has_records;
    } cases[] = {
        {"fused: the fallback's context query fails",
         false,
         0,
         kWsaEnotsock,
         {"context 1024"},
         core::Query::original_destination,
         false},
        {"fused: the fallback's records query fails",
         false,
         kWsaEnotsock,
         kFwpENotFound,
         {"context 1024", "records 1024"},
         core::Query::original_destination,
         false},
        {"fused: the records query fails",
         true,
         kWsaEnotsock,
         0,
         {"records 1024"},
         core::Query::redirect_records,
         false},
        {"fused: the context query fails",
         true,
         0,
         kWsaEnotsock,
         {"records 1024", "context 1024"},
         core::Query::redirect_context,
         true},
    };
    for (const auto& c : cases) {
        checks.scenario = c.scenario;
        ScriptedStack stack(checks);
        scene.redirect(stack, c.original_dst_option);
        stack.records_error = c.records_error;
        stack.context_error = c.context_error;
        OriginalDstSupport support;
        core::ConnectionState state;
        query_connection_state(stack.ops(), kScriptedSocket, support, state);
        CHECK(checks, stack.calls == then(then(kSoOriginalDstCalls, c.queries), {"getpeername"}));
        CHECK(checks, state.failure.outcome == Outcome::os_error &&
                          state.failure.code == kWsaEnotsock && state.failed_query == c.failed);
        CHECK(checks,
              state.has_records == c.has_records && !state.has_context && has_scene_peer(state));
        CHECK(checks, support.lacking_code() == 0);
    }

    checks.scenario = "fused: no peer";
    ScriptedStack lonely(checks);
    scene.redirect(lonely, true);
    lonely.peer_address.clear();
    OriginalDstSupport support;
    core::ConnectionState state;
    query_connection_state(lonely.ops(), kScriptedSocket, support, state);
    CHECK(checks, state.failure.ok() && state.has_records && !state.has_peer);
}
} // namespace

void run_scripted_stack_suite(Checks& checks) {
    every_record_size_and_refusal(checks);
    growth_spot_checks(checks);
    zero_byte_success_is_an_error(checks);
    overlong_success_is_an_error(checks);
    not_redirected_under_each_code(checks);
    no_context_with_records(checks);
    context_is_returned(checks);
    error_classes(checks);
    set_records(checks);
    set_records_refuses_other_sockets(checks);
    original_destination_sources(checks);
    fused_with_so_original_dst(checks);
    fused_without_so_original_dst(checks);
    fused_keeps_asking_so_original_dst(checks);
    fused_too_small_answers(checks);
    fused_failures_name_their_query(checks);
}

} // namespace wfpredirect::tests
