// decode_wfpsampler_context and decode_windows_sockaddr on valid, truncated,
// wrong-family input, and what a real driver stores (dirty padding, an
// unspecified local half).
#include <cstring>
#include <string>

#include "../../csrc/core/common/wfpsampler_context.hpp"
#include "../../csrc/core/wfp/constants.hpp"
#include "suites.hpp"
#include "windows_addresses.hpp"

namespace wfpredirect::tests {
namespace {

using core::Outcome;
using core::SocketAddress;
using core::Status;
using namespace core::wfp;

const std::array<std::uint8_t, 4> kRemote4{192, 0, 2, 10};
const std::array<std::uint8_t, 4> kLocal4{10, 0, 0, 5};
const std::array<std::uint8_t, 16> kRemote6{0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0,
                                            0,    0,    0,    0,    0, 0, 0, 0x42};
const std::array<std::uint8_t, 16> kLocal6{0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};

// A port whose two bytes differ, so a byte-order mistake shows.
constexpr std::uint16_t kRemotePort = 0x01BB; // 443
constexpr std::uint16_t kLocalPort = 0xC350;  // 50000
constexpr std::uint32_t kFlowinfo = 0x000ABCDE;
constexpr std::uint32_t kScopeId = 0x01020304;

bool holds(const SocketAddress& address, core::IpVersion version, const std::uint8_t* bytes,
           std::uint16_t port) {
    return address.version == version && address.port == port &&
           std::memcmp(address.address, bytes, address.address_size()) == 0;
}

bool names(const Status& status, const char* text) {
    return status.text().find(text) != std::string::npos;
}

// An address no decoder would produce, to prove failures leave outputs alone.
SocketAddress sentinel() {
    SocketAddress address;
    address.port = 7;
    return address;
}

void decodes_ipv4_pair(Checks& checks) {
    checks.scenario = "context: IPv4 remote and local";
    const auto context = wfpsampler_context(windows_sockaddr_in(kRemote4, kRemotePort),
                                            windows_sockaddr_in(kLocal4, kLocalPort));
    SocketAddress remote, local;
    const Status status = decode_wfpsampler_context(context.data(), context.size(), remote, local);
    CHECK(checks, status.ok());
    CHECK(checks, holds(remote, core::IpVersion::v4, kRemote4.data(), kRemotePort));
    CHECK(checks, holds(local, core::IpVersion::v4, kLocal4.data(), kLocalPort));
}

void decodes_ipv6_pair(Checks& checks) {
    checks.scenario = "context: IPv6 remote and local";
    const auto context =
        wfpsampler_context(windows_sockaddr_in6(kRemote6, kRemotePort, kFlowinfo, 0),
                           windows_sockaddr_in6(kLocal6, kLocalPort, 0, kScopeId));
    SocketAddress remote, local;
    const Status status = decode_wfpsampler_context(context.data(), context.size(), remote, local);
    CHECK(checks, status.ok());
    CHECK(checks, holds(remote, core::IpVersion::v6, kRemote6.data(), kRemotePort));
    CHECK(checks, remote.flowinfo == kFlowinfo);
    CHECK(checks, remote.scope_id == 0);
    CHECK(checks, holds(local, core::IpVersion::v6, kLocal6.data(), kLocalPort));
    CHECK(checks, local.flowinfo == 0);
    CHECK(checks, local.scope_id == kScopeId);
}

void decodes_mixed_families(Checks& checks) {
    checks.scenario = "context: IPv6 remote, IPv4 local";
    const auto context = wfpsampler_context(windows_sockaddr_in6(kRemote6, kRemotePort, 0, 0),
                                            windows_sockaddr_in(kLocal4, kLocalPort));
    SocketAddress remote, local;
    CHECK(checks, decode_wfpsampler_context(context.data(), context.size(), remote, local).ok());
    CHECK(checks, holds(remote, core::IpVersion::v6, kRemote6.data(), kRemotePort));
    CHECK(checks, holds(local, core::IpVersion::v4, kLocal4.data(), kLocalPort));
}

// Decodes `context` expecting rejection with `problem`, outputs untouched.
void rejects(Checks& checks, const std::vector<std::uint8_t>& context, std::size_t size,
             const char* problem) {
    SocketAddress remote = sentinel(), local = sentinel();
    const Status status = decode_wfpsampler_context(context.data(), size, remote, local);
    CHECK(checks, status.outcome == Outcome::invalid_argument);
    CHECK(checks, status.code == 0);
    CHECK(checks, names(status, problem));
    CHECK(checks, remote == sentinel() && local == sentinel());
}

void rejects_wrong_sizes(Checks& checks) {
    const auto context = wfpsampler_context(windows_sockaddr_in(kRemote4, kRemotePort),
                                            windows_sockaddr_in(kLocal4, kLocalPort));
    auto longer = context;
    longer.push_back(0);
    checks.scenario = "context: truncated by one byte";
    rejects(checks, context, context.size() - 1, "is not 256 bytes");
    checks.scenario = "context: one trailing byte";
    rejects(checks, longer, longer.size(), "is not 256 bytes");
    checks.scenario = "context: one storage only";
    rejects(checks, context, kWindowsSockaddrStorageSize, "is not 256 bytes");
    checks.scenario = "context: empty";
    rejects(checks, {}, 0, "is not 256 bytes");
}

void rejects_wrong_families(Checks& checks) {
    const auto valid = wfpsampler_context(windows_sockaddr_in(kRemote4, kRemotePort),
                                          windows_sockaddr_in6(kLocal6, kLocalPort, 0, 0));
    auto linux_inet6 = valid;
    linux_inet6[0] = 10; // Linux's AF_INET6: a context written with host families
    checks.scenario = "context: remote family is Linux's AF_INET6";
    rejects(checks, linux_inet6, linux_inet6.size(), "remote address has unknown family");

    auto big_endian = valid;
    big_endian[0] = 0;
    big_endian[1] = static_cast<std::uint8_t>(kWindowsAfInet); // 0x0200: byte-swapped AF_INET
    checks.scenario = "context: remote family byte-swapped";
    rejects(checks, big_endian, big_endian.size(), "remote address has unknown family");

    auto unspecified = valid;
    unspecified[kWindowsSockaddrStorageSize] = 0; // AF_UNSPEC
    checks.scenario = "context: local family AF_UNSPEC";
    rejects(checks, unspecified, unspecified.size(), "local address has unknown family");
}

// A driver copies the kernel's whole SOCKADDR_STORAGE: what follows the
// address (sin_zero, the storage's tail) may be anything.
void accepts_dirty_padding(Checks& checks) {
    const auto valid = wfpsampler_context(windows_sockaddr_in(kRemote4, kRemotePort),
                                          windows_sockaddr_in6(kLocal6, kLocalPort, 0, 0));
    auto dirty = valid;
    dirty[8] = 1;                                                        // remote sin_zero
    dirty[kWindowsSockaddrStorageSize - 1] = 0xEE;                       // remote storage tail
    dirty[kWindowsSockaddrStorageSize + kWindowsSockaddrIn6Size] = 0x55; // after local IN6
    dirty[kWfpSamplerContextSize - 1] = 1;                               // local storage tail
    checks.scenario = "context: bytes past both addresses not zero";
    SocketAddress remote, local;
    CHECK(checks, decode_wfpsampler_context(dirty.data(), dirty.size(), remote, local).ok());
    CHECK(checks, holds(remote, core::IpVersion::v4, kRemote4.data(), kRemotePort));
    CHECK(checks, holds(local, core::IpVersion::v6, kLocal6.data(), kLocalPort));

    checks.scenario = "sockaddr: Winsock's own answers keep zero padding";
    auto in4 = windows_sockaddr_in(kRemote4, kRemotePort);
    in4[8] = 1;
    SocketAddress address;
    CHECK(checks, decode_windows_sockaddr(in4.data(), in4.size(), address) ==
                      SockaddrProblem::nonzero_padding);
    CHECK(checks, decode_windows_sockaddr(in4.data(), in4.size(), address, Padding::anything) ==
                      SockaddrProblem::none);
}

// A UDP flow's local half can be all zeros; the remote half cannot.
void decodes_unspecified_local(Checks& checks) {
    const std::vector<std::uint8_t> zeros(kWindowsSockaddrStorageSize, 0);
    checks.scenario = "context: local half all zeros";
    const auto context = wfpsampler_context(windows_sockaddr_in(kRemote4, kRemotePort), zeros);
    SocketAddress remote, local = sentinel();
    CHECK(checks, decode_wfpsampler_context(context.data(), context.size(), remote, local).ok());
    CHECK(checks, holds(remote, core::IpVersion::v4, kRemote4.data(), kRemotePort));
    CHECK(checks, local == SocketAddress{});

    checks.scenario = "context: remote half all zeros";
    const auto backwards = wfpsampler_context(zeros, windows_sockaddr_in(kLocal4, kLocalPort));
    rejects(checks, backwards, backwards.size(), "remote address has unknown family");
}

void decodes_bare_sockaddrs(Checks& checks) {
    checks.scenario = "sockaddr: exact SOCKADDR_IN and SOCKADDR_IN6";
    const auto in4 = windows_sockaddr_in(kRemote4, kRemotePort);
    const auto in6 = windows_sockaddr_in6(kRemote6, kRemotePort, kFlowinfo, kScopeId);
    SocketAddress address;
    CHECK(checks,
          decode_windows_sockaddr(in4.data(), in4.size(), address) == SockaddrProblem::none);
    CHECK(checks, holds(address, core::IpVersion::v4, kRemote4.data(), kRemotePort));
    CHECK(checks,
          decode_windows_sockaddr(in6.data(), in6.size(), address) == SockaddrProblem::none);
    CHECK(checks, holds(address, core::IpVersion::v6, kRemote6.data(), kRemotePort));
    CHECK(checks, address.flowinfo == kFlowinfo && address.scope_id == kScopeId);

    checks.scenario = "sockaddr: truncated";
    CHECK(checks, decode_windows_sockaddr(in4.data(), in4.size() - 1, address) ==
                      SockaddrProblem::too_short);
    CHECK(checks, decode_windows_sockaddr(in6.data(), in6.size() - 1, address) ==
                      SockaddrProblem::too_short);
    CHECK(checks, decode_windows_sockaddr(in4.data(), 1, address) == SockaddrProblem::too_short);
}

} // namespace

void run_context_decoder_suite(Checks& checks) {
    decodes_ipv4_pair(checks);
    decodes_ipv6_pair(checks);
    decodes_mixed_families(checks);
    rejects_wrong_sizes(checks);
    rejects_wrong_families(checks);
    accepts_dirty_padding(checks);
    decodes_unspecified_local(checks);
    decodes_bare_sockaddrs(checks);
}

} // namespace wfpredirect::tests
