#include "errors.hpp"

#include "constants.hpp"

namespace wfpredirect::core::wfp {
namespace {

Outcome outcome_of(std::uint32_t error, WinsockCall kind) {
    if (error == kWsaEacces)
        return Outcome::permission_denied;
    switch (kind) {
    case WinsockCall::query:
        if (error == kWsaEinval || error == kFwpENotFound || error == kErrorNotFound ||
            error == kWsaEnotconn)
            return Outcome::not_redirected;
        return error == kWsaEopnotsupp ? Outcome::unsupported : Outcome::os_error;
    case WinsockCall::socket_option:
        return error == kWsaEopnotsupp ? Outcome::unsupported : Outcome::os_error;
    case WinsockCall::datagram_option:
        if (error == kWsaEnoprotoopt || error == kWsaEopnotsupp || error == kWsaEinval)
            return Outcome::unsupported;
        return Outcome::os_error;
    case WinsockCall::transfer:
        return error == kWsaEwouldblock ? Outcome::would_block : Outcome::os_error;
    }
    return Outcome::os_error;
}

} // namespace

Status classify(std::uint32_t error, WinsockCall kind, const char* call, Explanation explanation) {
    return Status::failure(outcome_of(error, kind), error, call, explanation);
}

} // namespace wfpredirect::core::wfp
