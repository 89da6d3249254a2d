// Socket addresses in Windows layout, read on every platform: the redirect
// context Microsoft's WFPSampler callout stores, and the SOCKADDR that
// Windows' SO_ORIGINAL_DST answers with. Windows' address families (2, 23),
// not the host's, so this decodes the same on Linux, where it is tested.
#pragma once

#include <cstddef>
#include <cstdint>

#include "socket_address.hpp"
#include "status.hpp"

namespace wfpredirect::core::wfp {

// Structure sizes from ws2def.h / ws2ipdef.h (checked against the SDK in
// windows/winsock_ops.cpp).
constexpr std::size_t kWindowsSockaddrInSize = 16;       // SOCKADDR_IN
constexpr std::size_t kWindowsSockaddrIn6Size = 28;      // SOCKADDR_IN6
constexpr std::size_t kWindowsSockaddrStorageSize = 128; // SOCKADDR_STORAGE

// WFPSampler's context: the original remote, then the original local address.
constexpr std::size_t kWfpSamplerContextSize = 2 * kWindowsSockaddrStorageSize;

enum class SockaddrProblem : std::uint8_t { none, unknown_family, too_short, nonzero_padding };

// Decodes a SOCKADDR_IN or SOCKADDR_IN6 occupying exactly `size` bytes: the
// structure, then padding that must be zero (sin_zero included). Family is
// little-endian, port and IPv6 flowinfo are in network order, scope id in
// little-endian host order, as Windows stores them.
SockaddrProblem decode_windows_sockaddr(const std::uint8_t* data, std::size_t size,
                                        SocketAddress& out);

// Encodes `address` as a SOCKADDR_IN or SOCKADDR_IN6 into `out`
// (kWindowsSockaddrIn6Size bytes at least); returns the size written.
std::size_t encode_windows_sockaddr(const SocketAddress& address, std::uint8_t* out);

// Decodes a WFPSampler redirect context. Exactly kWfpSamplerContextSize bytes
// are required: trailing bytes mean some other driver's layout, and guessing
// would hand a proxy a wrong destination. Anything else is
// Outcome::invalid_argument (code 0) with `call` naming the problem.
Status decode_wfpsampler_context(const std::uint8_t* data, std::size_t size, SocketAddress& remote,
                                 SocketAddress& local);

} // namespace wfpredirect::core::wfp
