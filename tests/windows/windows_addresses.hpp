// Socket addresses laid out byte by byte as Windows stores them, written
// independently of the decoder under test.
#pragma once

#include <array>
#include <cstdint>
#include <vector>

namespace wfpredirect::tests {

// SOCKADDR_IN: family 2 (little-endian), port (network order), address.
std::vector<std::uint8_t> windows_sockaddr_in(std::array<std::uint8_t, 4> address,
                                              std::uint16_t port);

// SOCKADDR_IN6: family 23, port, flowinfo (network order), address, scope id
// (little-endian).
std::vector<std::uint8_t> windows_sockaddr_in6(std::array<std::uint8_t, 16> address,
                                               std::uint16_t port, std::uint32_t flowinfo,
                                               std::uint32_t scope_id);

// WFPSampler's context: each address zero-padded to a 128-byte SOCKADDR_STORAGE.
std::vector<std::uint8_t> wfpsampler_context(const std::vector<std::uint8_t>& remote,
                                             const std::vector<std::uint8_t>& local);

} // namespace wfpredirect::tests
