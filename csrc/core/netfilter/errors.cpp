#include "errors.hpp"

#include <cerrno>

namespace wfpredirect::core::netfilter {

Status classify(int error, SystemCall kind, const char* call, Explanation denied) {
    const auto code = static_cast<std::uint32_t>(error);
    if (error == EPERM || error == EACCES)
        return Status::failure(Outcome::permission_denied, code, call, denied);
    if (kind == SystemCall::transfer) {
        if (error == EAGAIN || error == EWOULDBLOCK)
            return Status::failure(Outcome::would_block, code, call);
        if (error == EINTR)
            return Status::failure(Outcome::interrupted, code, call);
    }
    return Status::failure(Outcome::os_error, code, call);
}

} // namespace wfpredirect::core::netfilter
