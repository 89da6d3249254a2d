#include "record.hpp"

#include "marks.hpp"

#include <cerrno>
#include <cstring>

namespace wfpredirect::core {
namespace {

constexpr std::uint8_t kMagic[4] = {'W', 'F', 'P', 'R'};
constexpr std::uint8_t kFlagTransparent = 0x01;
constexpr std::size_t kHeaderSize = 14; // magic .. port

void put_u16(std::uint8_t* out, std::uint16_t value) {
    out[0] = static_cast<std::uint8_t>(value >> 8);
    out[1] = static_cast<std::uint8_t>(value);
}

void put_u32(std::uint8_t* out, std::uint32_t value) {
    for (int i = 0; i < 4; ++i)
        out[i] = static_cast<std::uint8_t>(value >> (24 - 8 * i));
}

std::uint16_t get_u16(const std::uint8_t* in) {
    return static_cast<std::uint16_t>((in[0] << 8) | in[1]);
}

std::uint32_t get_u32(const std::uint8_t* in) {
    return (std::uint32_t{in[0]} << 24) | (std::uint32_t{in[1]} << 16) |
           (std::uint32_t{in[2]} << 8) | std::uint32_t{in[3]};
}

Status invalid(const char* problem) {
    return Status::refusal(Outcome::invalid_argument, EINVAL, problem);
}

} // namespace

std::size_t netfilter_record_size(const NetfilterRecord& record) {
    return record.original_destination.version == IpVersion::v4 ? kNetfilterRecordV4Size
                                                                : kNetfilterRecordV6Size;
}

std::size_t encode_netfilter_record(const NetfilterRecord& record, std::uint8_t* out) {
    const SocketAddress& destination = record.original_destination;
    std::memcpy(out, kMagic, sizeof kMagic);
    out[4] = kNetfilterRecordVersion;
    out[5] = static_cast<std::uint8_t>(destination.version);
    out[6] = record.transparent ? kFlagTransparent : 0;
    out[7] = 0;
    put_u32(out + 8, record.mark);
    put_u16(out + 12, destination.port);
    std::memcpy(out + kHeaderSize, destination.address, destination.address_size());
    if (destination.version == IpVersion::v6) {
        put_u32(out + kHeaderSize + 16, destination.flowinfo);
        put_u32(out + kHeaderSize + 20, destination.scope_id);
    }
    return netfilter_record_size(record);
}

Status decode_netfilter_record(const std::uint8_t* data, std::size_t size, NetfilterRecord& out) {
    if (size < kNetfilterRecordV4Size)
        return invalid("records are too short to be a netfilter record (truncated or foreign)");
    if (std::memcmp(data, kMagic, sizeof kMagic) != 0)
        return invalid("records are not a wfpredirect netfilter record (no WFPR magic)");
    if (data[4] != kNetfilterRecordVersion)
        return invalid("records use another version of the netfilter record format");
    if ((data[6] & ~kFlagTransparent) != 0 || data[7] != 0)
        return invalid("records have unknown flags set (corrupt)");

    NetfilterRecord record;
    SocketAddress& destination = record.original_destination;
    if (data[5] == 4) {
        destination.version = IpVersion::v4;
    } else if (data[5] == 6) {
        destination.version = IpVersion::v6;
    } else {
        return invalid("records name an IP version other than 4 or 6 (corrupt)");
    }
    if (size != netfilter_record_size(record))
        return invalid("records have the wrong length for their IP version (truncated or corrupt)");

    record.transparent = (data[6] & kFlagTransparent) != 0;
    record.mark = get_u32(data + 8);
    destination.port = get_u16(data + 12);
    std::memcpy(destination.address, data + kHeaderSize, destination.address_size());
    if (destination.version == IpVersion::v6) {
        destination.flowinfo = get_u32(data + kHeaderSize + 16);
        destination.scope_id = get_u32(data + kHeaderSize + 20);
    }
    out = record;
    return Status::success(size);
}

Status upstream_mark(const std::uint8_t* records, std::size_t size, const MarkConfig& marks,
                     std::uint32_t& mark) {
    Status status = netfilter::check_marks(marks);
    if (!status.ok())
        return status;
    NetfilterRecord record;
    status = decode_netfilter_record(records, size, record);
    if (!status.ok())
        return status;
    mark = netfilter::upstream_mark_for(record.mark, marks);
    return Status::success(0);
}

} // namespace wfpredirect::core
