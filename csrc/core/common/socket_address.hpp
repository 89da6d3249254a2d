// A platform-neutral IP endpoint, filled by the backends and turned into a
// Python address tuple by the glue.
#pragma once

#include <cstddef>
#include <cstdint>

namespace wfpredirect::core {

enum class IpVersion : std::uint8_t { v4 = 4, v6 = 6 };

struct SocketAddress {
    IpVersion version = IpVersion::v4;
    std::uint8_t address[16] = {}; // network byte order; 4 bytes used for IPv4
    std::uint16_t port = 0;        // host byte order
    std::uint32_t flowinfo = 0;    // IPv6 only, host byte order
    std::uint32_t scope_id = 0;    // IPv6 only

    std::size_t address_size() const { return version == IpVersion::v4 ? 4 : 16; }
};

bool operator==(const SocketAddress& a, const SocketAddress& b);

// An IPv4-mapped IPv6 address (::ffff:a.b.c.d, what a dual-stack socket
// reports for IPv4 traffic) as the IPv4 address it carries, port kept;
// any other address unchanged.
SocketAddress unmap_ipv4(const SocketAddress& address);

// Longest text format_host writes, including the terminating NUL
// (INET6_ADDRSTRLEN).
constexpr std::size_t kHostTextSize = 46;

// Writes the numeric host ("127.0.0.2", "::1") into text, NUL-terminated.
void format_host(const SocketAddress& address, char (&text)[kHostTextSize]);

// Parses a numeric IPv4 ("127.0.0.3") or IPv6 ("::1") host into
// out.version and out.address; false for anything else (names included).
bool parse_host(const char* text, SocketAddress& out);

} // namespace wfpredirect::core
