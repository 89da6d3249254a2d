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

void format_host(const SocketAddress& address, char (&text)[kHostTextSize]) {
    const int family = address.version == IpVersion::v4 ? AF_INET : AF_INET6;
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
