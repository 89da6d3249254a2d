#include "wfpsampler_context.hpp"

#include <algorithm>
#include <cstring>

#include "../wfp/constants.hpp"

namespace wfpredirect::core::wfp {
namespace {

// Field offsets shared by SOCKADDR_IN and SOCKADDR_IN6 (ws2def.h, ws2ipdef.h).
constexpr std::size_t kFamilyOffset = 0;
constexpr std::size_t kPortOffset = 2;
constexpr std::size_t kIn4AddressOffset = 4;
constexpr std::size_t kIn4AddressSize = 4;
// SOCKADDR_IN's used part; sin_zero after it is padding.
constexpr std::size_t kIn4UsedSize = kIn4AddressOffset + kIn4AddressSize;
constexpr std::size_t kIn6FlowinfoOffset = 4;
constexpr std::size_t kIn6AddressOffset = 8;
constexpr std::size_t kIn6AddressSize = 16;
constexpr std::size_t kIn6ScopeIdOffset = 24;

std::uint16_t read_little_endian16(const std::uint8_t* p) {
    return static_cast<std::uint16_t>(p[0] | p[1] << 8);
}

std::uint16_t read_big_endian16(const std::uint8_t* p) {
    return static_cast<std::uint16_t>(p[0] << 8 | p[1]);
}

std::uint32_t read_little_endian32(const std::uint8_t* p) {
    return std::uint32_t{p[0]} | std::uint32_t{p[1]} << 8 | std::uint32_t{p[2]} << 16 |
           std::uint32_t{p[3]} << 24;
}

std::uint32_t read_big_endian32(const std::uint8_t* p) {
    return std::uint32_t{p[0]} << 24 | std::uint32_t{p[1]} << 16 | std::uint32_t{p[2]} << 8 |
           std::uint32_t{p[3]};
}

void write_little_endian16(std::uint8_t* p, std::uint16_t value) {
    p[0] = static_cast<std::uint8_t>(value);
    p[1] = static_cast<std::uint8_t>(value >> 8);
}

void write_big_endian16(std::uint8_t* p, std::uint16_t value) {
    p[0] = static_cast<std::uint8_t>(value >> 8);
    p[1] = static_cast<std::uint8_t>(value);
}

void write_little_endian32(std::uint8_t* p, std::uint32_t value) {
    for (int i = 0; i < 4; ++i)
        p[i] = static_cast<std::uint8_t>(value >> (8 * i));
}

void write_big_endian32(std::uint8_t* p, std::uint32_t value) {
    for (int i = 0; i < 4; ++i)
        p[i] = static_cast<std::uint8_t>(value >> (8 * (3 - i)));
}

bool all_zero(const std::uint8_t* begin, const std::uint8_t* end) {
    return std::all_of(begin, end, [](std::uint8_t byte) { return byte == 0; });
}

// One half of a context: what its failure says, and what it may hold.
struct ContextHalf {
    const char* unknown_family;
    // Whether all zeros (AF_UNSPEC) stands for the unspecified IPv4 address.
    bool unspecified_allowed;
};

constexpr ContextHalf kRemoteHalf{"WFPSampler context: remote address has unknown family", false};
constexpr ContextHalf kLocalHalf{"WFPSampler context: local address has unknown family", true};

// A SOCKADDR_STORAGE always holds either structure, so too_short cannot occur.
Status decode_storage(const std::uint8_t* data, SocketAddress& out, const ContextHalf& half) {
    if (half.unspecified_allowed && all_zero(data, data + kWindowsSockaddrStorageSize)) {
        out = SocketAddress{};
        return Status::success(kWindowsSockaddrStorageSize);
    }
    if (decode_windows_sockaddr(data, kWindowsSockaddrStorageSize, out, Padding::anything) !=
        SockaddrProblem::none)
        return Status::refusal(Outcome::invalid_argument, 0, half.unknown_family);
    return Status::success(kWindowsSockaddrStorageSize);
}

} // namespace

SockaddrProblem decode_windows_sockaddr(const std::uint8_t* data, std::size_t size,
                                        SocketAddress& out, Padding padding) {
    if (size < kPortOffset + sizeof(std::uint16_t))
        return SockaddrProblem::too_short;
    const std::uint16_t family = read_little_endian16(data + kFamilyOffset);
    std::size_t used_size = 0;
    if (family == kWindowsAfInet) {
        used_size = kIn4UsedSize;
        if (size < kWindowsSockaddrInSize)
            return SockaddrProblem::too_short;
    } else if (family == kWindowsAfInet6) {
        used_size = kWindowsSockaddrIn6Size;
        if (size < kWindowsSockaddrIn6Size)
            return SockaddrProblem::too_short;
    } else {
        return SockaddrProblem::unknown_family;
    }
    if (padding == Padding::zero && !all_zero(data + used_size, data + size))
        return SockaddrProblem::nonzero_padding;

    SocketAddress address;
    address.port = read_big_endian16(data + kPortOffset);
    if (family == kWindowsAfInet) {
        address.version = IpVersion::v4;
        std::memcpy(address.address, data + kIn4AddressOffset, kIn4AddressSize);
    } else {
        address.version = IpVersion::v6;
        address.flowinfo = read_big_endian32(data + kIn6FlowinfoOffset);
        std::memcpy(address.address, data + kIn6AddressOffset, kIn6AddressSize);
        address.scope_id = read_little_endian32(data + kIn6ScopeIdOffset);
    }
    out = address;
    return SockaddrProblem::none;
}

std::size_t encode_windows_sockaddr(const SocketAddress& address, std::uint8_t* out) {
    if (address.version == IpVersion::v4) {
        std::memset(out, 0, kWindowsSockaddrInSize);
        write_little_endian16(out + kFamilyOffset, kWindowsAfInet);
        write_big_endian16(out + kPortOffset, address.port);
        std::memcpy(out + kIn4AddressOffset, address.address, kIn4AddressSize);
        return kWindowsSockaddrInSize;
    }
    write_little_endian16(out + kFamilyOffset, kWindowsAfInet6);
    write_big_endian16(out + kPortOffset, address.port);
    write_big_endian32(out + kIn6FlowinfoOffset, address.flowinfo);
    std::memcpy(out + kIn6AddressOffset, address.address, kIn6AddressSize);
    write_little_endian32(out + kIn6ScopeIdOffset, address.scope_id);
    return kWindowsSockaddrIn6Size;
}

static_assert(kWfpSamplerContextSize == 256, "the size message below names 256 bytes");

Status decode_wfpsampler_context(const std::uint8_t* data, std::size_t size, SocketAddress& remote,
                                 SocketAddress& local) {
    if (size != kWfpSamplerContextSize)
        return Status::refusal(Outcome::invalid_argument, 0,
                               "WFPSampler context is not 256 bytes (two SOCKADDR_STORAGE)");
    SocketAddress decoded_remote;
    SocketAddress decoded_local;
    Status status = decode_storage(data, decoded_remote, kRemoteHalf);
    if (!status.ok())
        return status;
    status = decode_storage(data + kWindowsSockaddrStorageSize, decoded_local, kLocalHalf);
    if (!status.ok())
        return status;
    remote = decoded_remote;
    local = decoded_local;
    return Status::success(kWfpSamplerContextSize);
}

} // namespace wfpredirect::core::wfp
