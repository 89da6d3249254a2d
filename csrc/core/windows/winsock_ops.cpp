#include "winsock_ops.hpp"

#include <winsock2.h>
#include <ws2tcpip.h>

#include "../wfp_constants.hpp"
#include "../wfpsampler_context.hpp"

namespace wfpredirect::core {
namespace {

// Our numbers are defined once, portably (wfp_constants.hpp); where the SDK
// has them too, they must agree.
static_assert(wfp::kWsaEfault == WSAEFAULT);
static_assert(wfp::kWsaEinval == WSAEINVAL);
static_assert(wfp::kWsaEnobufs == WSAENOBUFS);
static_assert(wfp::kWsaEacces == WSAEACCES);
static_assert(wfp::kWsaEopnotsupp == WSAEOPNOTSUPP);
static_assert(wfp::kWsaEnoprotoopt == WSAENOPROTOOPT);
static_assert(wfp::kWsaEnotsock == WSAENOTSOCK);
static_assert(wfp::kWsaEnotconn == WSAENOTCONN);
static_assert(wfp::kErrorInsufficientBuffer == ERROR_INSUFFICIENT_BUFFER);
static_assert(wfp::kErrorNotFound == ERROR_NOT_FOUND);
#ifdef FWP_E_NOT_FOUND
static_assert(wfp::kFwpENotFound == static_cast<std::uint32_t>(FWP_E_NOT_FOUND));
#endif
#ifdef SIO_QUERY_WFP_CONNECTION_REDIRECT_RECORDS
static_assert(wfp::kSioQueryRedirectRecords == SIO_QUERY_WFP_CONNECTION_REDIRECT_RECORDS);
static_assert(wfp::kSioQueryRedirectContext == SIO_QUERY_WFP_CONNECTION_REDIRECT_CONTEXT);
static_assert(wfp::kSioSetRedirectRecords == SIO_SET_WFP_CONNECTION_REDIRECT_RECORDS);
#endif
#ifdef IP_WFP_REDIRECT_RECORDS
static_assert(wfp::kIpWfpRedirectRecords == IP_WFP_REDIRECT_RECORDS);
static_assert(wfp::kIpWfpRedirectContext == IP_WFP_REDIRECT_CONTEXT);
#endif
static_assert(wfp::kWindowsAfInet == AF_INET);
static_assert(wfp::kWindowsAfInet6 == AF_INET6);
static_assert(wfp::kWindowsSockaddrInSize == sizeof(SOCKADDR_IN));
static_assert(wfp::kWindowsSockaddrIn6Size == sizeof(SOCKADDR_IN6));
static_assert(wfp::kWindowsSockaddrStorageSize == sizeof(SOCKADDR_STORAGE));
static_assert(sizeof(SOCKET) == sizeof(std::uintptr_t));

wfp::WinsockAnswer answer(int rc, DWORD bytes) {
    const std::uint32_t error = rc == 0 ? 0 : static_cast<std::uint32_t>(WSAGetLastError());
    return {rc, error, bytes};
}

wfp::WinsockAnswer ws2_ioctl(void*, std::uintptr_t socket, std::uint32_t code, const void* in,
                             std::uint32_t in_size, void* out, std::uint32_t out_size,
                             void* overlapped) {
    // Left untouched by some failures; 0 then means "no size reported".
    DWORD bytes = 0;
    // WSAIoctl's input buffer is not const in the SDK, but it only reads it.
    const int rc = WSAIoctl(static_cast<SOCKET>(socket), code, const_cast<void*>(in), in_size, out,
                            out_size, &bytes, static_cast<LPWSAOVERLAPPED>(overlapped), nullptr);
    return answer(rc, bytes);
}

wfp::WinsockAnswer ws2_getsockopt(void*, std::uintptr_t socket, int level, int name, void* out,
                                  std::uint32_t out_size) {
    int length = static_cast<int>(out_size);
    const int rc =
        ::getsockopt(static_cast<SOCKET>(socket), level, name, static_cast<char*>(out), &length);
    return answer(rc, static_cast<DWORD>(length));
}

wfp::WinsockAnswer ws2_getsockname(void*, std::uintptr_t socket, void* out,
                                   std::uint32_t out_size) {
    int length = static_cast<int>(out_size);
    const int rc = ::getsockname(static_cast<SOCKET>(socket), static_cast<sockaddr*>(out), &length);
    return answer(rc, static_cast<DWORD>(length));
}

constexpr wfp::WinsockOps kWs2Ops{nullptr, &ws2_ioctl, &ws2_getsockopt, &ws2_getsockname};

} // namespace

const wfp::WinsockOps& real_winsock_ops() { return kWs2Ops; }

} // namespace wfpredirect::core
