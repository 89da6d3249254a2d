#include "socket_address.hpp"

#include <cstring>

#if defined(_WIN32)
#include <winsock2.h>
#include <ws2tcpip.h>
#else
#include <arpa/inet.h>
#include <sys/socket.h>
#endif

namespace wfpredirect::core {

bool operator==(const SocketAddress& a, const SocketAddress& b) {
    return a.version == b.version && a.port == b.port && a.flowinfo == b.flowinfo &&
           a.scope_id == b.scope_id && std::memcmp(a.address, b.address, a.address_size()) == 0;
}

SocketAddress unmap_ipv4(const SocketAddress& address) {
    static constexpr std::uint8_t kMappedPrefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF};
    if (address.version != IpVersion::v6 ||
        std::memcmp(address.address, kMappedPrefix, sizeof kMappedPrefix) != 0)
        return address;
    SocketAddress out;
    out.version = IpVersion::v4;
    std::memcpy(out.address, address.address + 12, 4);
    out.port = address.port;
    return out;
}

namespace {

// One IPv4 octet in decimal, without leading zeros; returns the end.
char* format_octet(unsigned value, char* out) {
    if (value >= 100)
        *out++ = static_cast<char>('0' + value / 100);
    if (value >= 10)
        *out++ = static_cast<char>('0' + value / 10 % 10);
    *out++ = static_cast<char>('0' + value % 10);
    return out;
}

} // namespace

void format_host(const SocketAddress& address, char (&text)[kHostTextSize]) {
    // IPv4 by hand: glibc's inet_ntop formats through sprintf, which costs
    // more than the system calls of a connection's whole redirect state.
    if (address.version == IpVersion::v4) {
        char* out = text;
        for (std::size_t i = 0; i < 4; ++i) {
            out = format_octet(address.address[i], out);
            *out++ = i < 3 ? '.' : '\0';
        }
        return;
    }
    const int family = AF_INET6;
    // inet_ntop cannot fail here: the family is valid and the buffer is
    // INET6_ADDRSTRLEN bytes. Keep the output defined anyway.
    if (inet_ntop(family, address.address, text, kHostTextSize) == nullptr)
        text[0] = '\0';
}

bool parse_host(const char* text, SocketAddress& out) {
    if (inet_pton(AF_INET, text, out.address) == 1) {
        out.version = IpVersion::v4;
        return true;
    }
    if (inet_pton(AF_INET6, text, out.address) == 1) {
        out.version = IpVersion::v6;
        return true;
    }
    return false;
}

} // namespace wfpredirect::core
