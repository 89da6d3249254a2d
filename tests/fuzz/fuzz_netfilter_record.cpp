// decode_netfilter_record on arbitrary bytes: it reads only inside the input,
// refuses with a message, and what it accepts re-encodes to the same bytes
// (the format has no slack a corrupt record could hide in).
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "../../csrc/core/netfilter/record.hpp"
#include "fuzz_check.hpp"

using namespace wfpredirect::core;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    NetfilterRecord record;
    const Status status = decode_netfilter_record(data, size, record);
    if (!status.ok()) {
        FUZZ_REQUIRE(status.outcome == Outcome::invalid_argument && !status.text().empty());
        return 0;
    }
    FUZZ_REQUIRE(status.size == size && size == netfilter_record_size(record));
    std::uint8_t encoded[kNetfilterRecordMaxSize];
    FUZZ_REQUIRE(encode_netfilter_record(record, encoded) == size);
    FUZZ_REQUIRE(std::memcmp(encoded, data, size) == 0);
    return 0;
}
