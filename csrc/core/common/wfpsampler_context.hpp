// Socket addresses in Windows layout, read on every platform: the redirect
// context Microsoft's WFPSampler callout stores, and the SOCKADDR that
// Windows' SO_ORIGINAL_DST answers with. Windows' address families (2, 23),
// not the host's, so this decodes the same on Linux, where it is tested.
#pragma once

#include <cstddef>
#include <cstdint>

#include "../status.hpp"
#include "socket_address.hpp"

namespace wfpredirect::core::wfp {

// Structure sizes from ws2def.h / ws2ipdef.h (checked against the SDK in
// wfp/ws2_32.cpp).
constexpr std::size_t kWindowsSockaddrInSize = 16;       // SOCKADDR_IN
constexpr std::size_t kWindowsSockaddrIn6Size = 28;      // SOCKADDR_IN6
constexpr std::size_t kWindowsSockaddrStorageSize = 128; // SOCKADDR_STORAGE

// WFPSampler's context: the original remote, then the original local address.
constexpr std::size_t kWfpSamplerContextSize = 2 * kWindowsSockaddrStorageSize;

enum class SockaddrProblem : std::uint8_t { none, unknown_family, too_short, nonzero_padding };

// What may follow the address fields of a SOCKADDR_IN (its sin_zero) or
// SOCKADDR_IN6 within `size` bytes.
enum class Padding : std::uint8_t {
    zero,     // what Winsock itself writes (getsockname, SO_ORIGINAL_DST)
    anything, // a kernel structure copied whole by a driver
};

// Decodes a SOCKADDR_IN or SOCKADDR_IN6 occupying exactly `size` bytes: the
// structure, then padding (sin_zero included) as `padding` allows. Family is
// little-endian, port and IPv6 flowinfo are in network order, scope id in
// little-endian host order, as Windows stores them.
SockaddrProblem decode_windows_sockaddr(const std::uint8_t* data, std::size_t size,
                                        SocketAddress& out, Padding padding = Padding::zero);

// Encodes `address` as a SOCKADDR_IN or SOCKADDR_IN6 into `out`
// (kWindowsSockaddrIn6Size bytes at least); returns the size written.
std::size_t encode_windows_sockaddr(const SocketAddress& address, std::uint8_t* out);

// Decodes a WFPSampler redirect context. Exactly kWfpSamplerContextSize bytes
// are required: trailing bytes mean some other driver's layout, and guessing
// would hand a proxy a wrong destination. Each half is the kernel's
// SOCKADDR_STORAGE copied whole, so whatever follows the address in it is
// not looked at; a local half of all zeros (AF_UNSPEC: what a UDP flow's
// local address can be) is 0.0.0.0 port 0. Anything else is
// Outcome::invalid_argument (code 0) with `call` naming the problem.
Status decode_wfpsampler_context(const std::uint8_t* data, std::size_t size, SocketAddress& remote,
                                 SocketAddress& local);

} // namespace wfpredirect::core::wfp
