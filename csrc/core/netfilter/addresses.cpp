#include "addresses.hpp"

#include <cstring>

#include <netinet/in.h>

namespace wfpredirect::core::netfilter {

bool to_socket_address(const sockaddr_storage& storage, SocketAddress& out,
                       MappedAddresses mapped) {
    if (storage.ss_family == AF_INET) {
        const auto& v4 = reinterpret_cast<const sockaddr_in&>(storage);
        out = SocketAddress{};
        out.version = IpVersion::v4;
        std::memcpy(out.address, &v4.sin_addr, 4);
        out.port = ntohs(v4.sin_port);
        return true;
    }
    if (storage.ss_family == AF_INET6) {
        const auto& v6 = reinterpret_cast<const sockaddr_in6&>(storage);
        out = SocketAddress{};
        if (mapped == MappedAddresses::as_ipv4 && IN6_IS_ADDR_V4MAPPED(&v6.sin6_addr)) {
            out.version = IpVersion::v4;
            std::memcpy(out.address, v6.sin6_addr.s6_addr + 12, 4);
        } else {
            out.version = IpVersion::v6;
            std::memcpy(out.address, &v6.sin6_addr, 16);
            out.flowinfo = ntohl(v6.sin6_flowinfo);
            out.scope_id = v6.sin6_scope_id;
        }
        out.port = ntohs(v6.sin6_port);
        return true;
    }
    return false;
}

socklen_t to_sockaddr(const SocketAddress& address, sockaddr_storage& out) {
    std::memset(&out, 0, sizeof out);
    if (address.version == IpVersion::v4) {
        auto& v4 = reinterpret_cast<sockaddr_in&>(out);
        v4.sin_family = AF_INET;
        v4.sin_port = htons(address.port);
        std::memcpy(&v4.sin_addr, address.address, 4);
        return sizeof v4;
    }
    auto& v6 = reinterpret_cast<sockaddr_in6&>(out);
    v6.sin6_family = AF_INET6;
    v6.sin6_port = htons(address.port);
    v6.sin6_flowinfo = htonl(address.flowinfo);
    std::memcpy(&v6.sin6_addr, address.address, 16);
    v6.sin6_scope_id = address.scope_id;
    return sizeof v6;
}

bool same_endpoint(const SocketAddress& a, const SocketAddress& b) {
    return a.version == b.version && a.port == b.port &&
           std::memcmp(a.address, b.address, a.address_size()) == 0;
}

} // namespace wfpredirect::core::netfilter
