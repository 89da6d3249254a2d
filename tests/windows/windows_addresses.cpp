#include "windows_addresses.hpp"

#include <algorithm>

#include "../../csrc/core/common/wfpsampler_context.hpp"
#include "../../csrc/core/wfp/constants.hpp"

namespace wfpredirect::tests {
namespace {

using namespace core::wfp;

void append_big_endian32(std::vector<std::uint8_t>& bytes, std::uint32_t value) {
    for (int shift = 24; shift >= 0; shift -= 8)
        bytes.push_back(static_cast<std::uint8_t>(value >> shift));
}

void append_little_endian32(std::vector<std::uint8_t>& bytes, std::uint32_t value) {
    for (int shift = 0; shift <= 24; shift += 8)
        bytes.push_back(static_cast<std::uint8_t>(value >> shift));
}

std::vector<std::uint8_t> family_and_port(std::uint16_t family, std::uint16_t port) {
    return {static_cast<std::uint8_t>(family), static_cast<std::uint8_t>(family >> 8),
            static_cast<std::uint8_t>(port >> 8), static_cast<std::uint8_t>(port)};
}

} // namespace

std::vector<std::uint8_t> windows_sockaddr_in(std::array<std::uint8_t, 4> address,
                                              std::uint16_t port) {
    std::vector<std::uint8_t> bytes = family_and_port(kWindowsAfInet, port);
    bytes.insert(bytes.end(), address.begin(), address.end());
    bytes.resize(kWindowsSockaddrInSize); // sin_zero
    return bytes;
}

std::vector<std::uint8_t> windows_sockaddr_in6(std::array<std::uint8_t, 16> address,
                                               std::uint16_t port, std::uint32_t flowinfo,
                                               std::uint32_t scope_id) {
    std::vector<std::uint8_t> bytes = family_and_port(kWindowsAfInet6, port);
    append_big_endian32(bytes, flowinfo);
    bytes.insert(bytes.end(), address.begin(), address.end());
    append_little_endian32(bytes, scope_id);
    return bytes;
}

std::vector<std::uint8_t> wfpsampler_context(const std::vector<std::uint8_t>& remote,
                                             const std::vector<std::uint8_t>& local) {
    std::vector<std::uint8_t> context(kWfpSamplerContextSize, 0);
    std::copy(remote.begin(), remote.end(), context.begin());
    std::copy(local.begin(), local.end(), context.begin() + kWindowsSockaddrStorageSize);
    return context;
}

} // namespace wfpredirect::tests
