// The netfilter backend's redirect record: the package's own versioned blob
// holding the original destination and the inbound mark (AND MARK_MASK).
// Portable so that it is tested on every platform.
//
// Layout (all integers big-endian):
//   offset 0   4 bytes  magic "WFPR"
//   offset 4   1 byte   format version (kNetfilterRecordVersion)
//   offset 5   1 byte   IP version of the original destination: 4 or 6
//   offset 6   1 byte   flags: bit 0 = accepted on an IP_TRANSPARENT (TPROXY)
//                       socket; other bits zero
//   offset 7   1 byte   zero
//   offset 8   4 bytes  inbound mark AND MARK_MASK
//   offset 12  2 bytes  original destination port
//   offset 14  4 or 16  original destination address
//   IPv6 only: 4 bytes flowinfo, then 4 bytes scope id
// Total: 18 bytes for IPv4, 38 for IPv6.
#pragma once

#include <cstddef>
#include <cstdint>

#include "../common/socket_address.hpp"
#include "../operations.hpp"
#include "../status.hpp"

namespace wfpredirect::core {

constexpr std::uint8_t kNetfilterRecordVersion = 1;
constexpr std::size_t kNetfilterRecordV4Size = 18;
constexpr std::size_t kNetfilterRecordV6Size = 38;
constexpr std::size_t kNetfilterRecordMaxSize = kNetfilterRecordV6Size;

struct NetfilterRecord {
    SocketAddress original_destination;
    std::uint32_t mark = 0;
    bool transparent = false;
};

std::size_t netfilter_record_size(const NetfilterRecord& record);

// Writes the record into out, which holds at least netfilter_record_size()
// bytes; returns the bytes written.
std::size_t encode_netfilter_record(const NetfilterRecord& record, std::uint8_t* out);

// Parses a record; anything truncated, of another version or foreign is
// Outcome::invalid_argument with a message saying which.
Status decode_netfilter_record(const std::uint8_t* data, std::size_t size, NetfilterRecord& out);

// The mark an upstream socket or datagram carries for `records`
// (marks.hpp, upstream_mark_for). Checks the marks and decodes the record
// first (invalid_argument when either is bad).
Status upstream_mark(const std::uint8_t* records, std::size_t size, const MarkConfig& marks,
                     std::uint32_t& mark);

} // namespace wfpredirect::core
