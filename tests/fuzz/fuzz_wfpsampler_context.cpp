// decode_wfpsampler_context and decode_windows_sockaddr on arbitrary bytes:
// reads stay inside the input, and whatever decodes re-encodes to the same
// bytes (families, ports, addresses, flow info, scope id; zero padding in
// a bare SOCKADDR, anything past the address in a context's halves).
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#include "../../csrc/core/common/wfpsampler_context.hpp"
#include "fuzz_check.hpp"

using namespace wfpredirect::core;
namespace wfp = wfpredirect::core::wfp;

namespace {

// The Windows layout of `address` padded with zeros to `size` bytes equals
// `expected`.
bool encodes_to(const SocketAddress& address, const std::uint8_t* expected, std::size_t size) {
    std::vector<std::uint8_t> encoded(std::max(size, wfp::kWindowsSockaddrIn6Size));
    const std::size_t used = wfp::encode_windows_sockaddr(address, encoded.data());
    return used <= size && std::memcmp(encoded.data(), expected, size) == 0;
}

// A context half: its address fields re-encode to the same bytes (what
// follows them is a copied kernel structure's and is not read), or it is
// the all-zero local half that stands for 0.0.0.0 port 0.
bool half_encodes_to(const SocketAddress& address, const std::uint8_t* expected) {
    // SOCKADDR_IN's fields end before sin_zero; SOCKADDR_IN6 is all fields.
    constexpr std::size_t kIn4Fields = 8;
    std::uint8_t encoded[wfp::kWindowsSockaddrIn6Size] = {};
    const std::size_t used = wfp::encode_windows_sockaddr(address, encoded);
    const std::size_t fields = address.version == IpVersion::v4 ? kIn4Fields : used;
    if (std::memcmp(encoded, expected, fields) == 0)
        return true;
    return address == SocketAddress{} &&
           std::all_of(expected, expected + wfp::kWindowsSockaddrStorageSize,
                       [](std::uint8_t byte) { return byte == 0; });
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    SocketAddress remote;
    SocketAddress local;
    const Status status = wfp::decode_wfpsampler_context(data, size, remote, local);
    if (status.ok()) {
        FUZZ_REQUIRE(size == wfp::kWfpSamplerContextSize && status.size == size);
        FUZZ_REQUIRE(half_encodes_to(remote, data));
        FUZZ_REQUIRE(half_encodes_to(local, data + wfp::kWindowsSockaddrStorageSize));
    } else {
        FUZZ_REQUIRE(status.outcome == Outcome::invalid_argument && !status.text().empty());
    }

    SocketAddress single;
    if (wfp::decode_windows_sockaddr(data, size, single) == wfp::SockaddrProblem::none)
        FUZZ_REQUIRE(encodes_to(single, data, size));
    return 0;
}
