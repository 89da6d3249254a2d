#include "ws2_32.hpp"

// winsock2.h first, in a block of its own: the SDK's mswsock.h and
// mstcpip.h need its types and do not include it (mingw-w64's mswsock.h
// does, which hides a wrong order from a mingw build).
#include <winsock2.h>
#include <ws2tcpip.h>

#include <mstcpip.h>
#include <mswsock.h>

#include <cstddef>

#include "../common/control_messages.hpp"
#include "../common/wfpsampler_context.hpp"
#include "constants.hpp"

namespace wfpredirect::core {
namespace {

// Our numbers are defined once, portably (constants.hpp); where the SDK
// has them too, they must agree. The Windows SDK has them all, so under MSVC
// every check below must run (mingw-w64's headers lack some).
#if defined(_MSC_VER) &&                                                                           \
    !(defined(FWP_E_NOT_FOUND) && defined(SIO_QUERY_WFP_CONNECTION_REDIRECT_RECORDS) &&            \
      defined(IP_WFP_REDIRECT_RECORDS) && defined(SO_ORIGINAL_DST))
#error "the Windows SDK must define FWP_E_NOT_FOUND, the WFP IOCTLs and options, SO_ORIGINAL_DST"
#endif
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
#if defined(IP_WFP_REDIRECT_RECORDS) && defined(FWP_E_NOT_FOUND) // mingw-w64 has these
static_assert(wfp::kIpWfpRedirectRecords == IP_WFP_REDIRECT_RECORDS);
static_assert(wfp::kIpWfpRedirectContext == IP_WFP_REDIRECT_CONTEXT);
static_assert(wfp::kFwpENotFound == static_cast<std::uint32_t>(FWP_E_NOT_FOUND));
#endif
#ifdef _MSC_VER // what only the Windows SDK has
static_assert(wfp::kSioQueryRedirectRecords == SIO_QUERY_WFP_CONNECTION_REDIRECT_RECORDS);
static_assert(wfp::kSioQueryRedirectContext == SIO_QUERY_WFP_CONNECTION_REDIRECT_CONTEXT);
static_assert(wfp::kSioSetRedirectRecords == SIO_SET_WFP_CONNECTION_REDIRECT_RECORDS);
static_assert(wfp::kWindowsSoOriginalDst == SO_ORIGINAL_DST);
static_assert(wfp::kWindowsSolIp == SOL_IP);
static_assert(wfp::kWindowsSolIpv6 == SOL_IPV6);
#endif
static_assert(wfp::kWindowsAfInet == AF_INET);
static_assert(wfp::kWindowsAfInet6 == AF_INET6);
static_assert(wfp::kWindowsSockaddrInSize == sizeof(SOCKADDR_IN));
static_assert(wfp::kWindowsSockaddrIn6Size == sizeof(SOCKADDR_IN6));
static_assert(wfp::kWindowsSockaddrStorageSize == sizeof(SOCKADDR_STORAGE));
static_assert(sizeof(SOCKET) == sizeof(std::uintptr_t));
static_assert(wfp::kWsaEwouldblock == WSAEWOULDBLOCK);
static_assert(wfp::kWsaEafnosupport == WSAEAFNOSUPPORT);
static_assert(wfp::kWsaEmsgsize == WSAEMSGSIZE);
static_assert(wfp::kWindowsIpprotoIp == IPPROTO_IP);
static_assert(wfp::kWindowsIpprotoIpv6 == IPPROTO_IPV6);
static_assert(wfp::kWindowsIpv6V6only == IPV6_V6ONLY);
static_assert(wfp::kWindowsSolSocket == SOL_SOCKET);
static_assert(wfp::kWindowsSoProtocolInfoW == SO_PROTOCOL_INFOW);
static_assert(wfp::kWindowsSoAcceptconn == SO_ACCEPTCONN);
static_assert(wfp::kWsaEisconn == WSAEISCONN);
static_assert(wfp::kWindowsProtocolInfoSize == sizeof(WSAPROTOCOL_INFOW));
static_assert(wfp::kWindowsProtocolInfoFamilyOffset == offsetof(WSAPROTOCOL_INFOW, iAddressFamily));
static_assert(wfp::kWindowsMsgCtrunc == MSG_CTRUNC);
// The portable control-message layout is WSACMSGHDR's.
static_assert(core::kControlHeaderSize == WSA_CMSGDATA_ALIGN(sizeof(WSACMSGHDR)));
static_assert(core::control_space(60) == WSA_CMSG_SPACE(60));
static_assert(core::control_length(60) == WSA_CMSG_LEN(60));

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

wfp::WinsockAnswer ws2_getpeername(void*, std::uintptr_t socket, void* out,
                                   std::uint32_t out_size) {
    int length = static_cast<int>(out_size);
    const int rc = ::getpeername(static_cast<SOCKET>(socket), static_cast<sockaddr*>(out), &length);
    return answer(rc, static_cast<DWORD>(length));
}

wfp::WinsockAnswer ws2_setsockopt(void*, std::uintptr_t socket, int level, int name,
                                  const void* value, std::uint32_t size) {
    const int rc = ::setsockopt(static_cast<SOCKET>(socket), level, name,
                                static_cast<const char*>(value), static_cast<int>(size));
    return answer(rc, 0);
}

WSAMSG to_wsamsg(const wfp::MessageBuffers& message, WSABUF& data) {
    data.buf = reinterpret_cast<char*>(message.data);
    data.len = message.data_size;
    WSAMSG out{};
    out.name = static_cast<sockaddr*>(message.name);
    out.namelen = static_cast<INT>(message.name_size);
    out.lpBuffers = &data;
    out.dwBufferCount = 1;
    out.Control.buf = reinterpret_cast<char*>(message.control);
    out.Control.len = message.control_size;
    return out;
}

// WSARecvMsg is an extension function of the socket's provider: looked up on
// the socket for each call, never cached in shared state.
wfp::WinsockAnswer ws2_recvmsg(void*, std::uintptr_t socket, wfp::MessageBuffers& message) {
    GUID guid = WSAID_WSARECVMSG;
    LPFN_WSARECVMSG recvmsg = nullptr;
    DWORD bytes = 0;
    if (WSAIoctl(static_cast<SOCKET>(socket), SIO_GET_EXTENSION_FUNCTION_POINTER, &guid,
                 sizeof guid, &recvmsg, sizeof recvmsg, &bytes, nullptr, nullptr) != 0)
        return answer(SOCKET_ERROR, 0);
    WSABUF data;
    WSAMSG wsamsg = to_wsamsg(message, data);
    bytes = 0;
    const int rc = recvmsg(static_cast<SOCKET>(socket), &wsamsg, &bytes, nullptr, nullptr);
    message.name_size = static_cast<std::uint32_t>(wsamsg.namelen);
    message.control_size = wsamsg.Control.len;
    message.flags = wsamsg.dwFlags;
    return answer(rc, bytes);
}

wfp::WinsockAnswer ws2_sendmsg(void*, std::uintptr_t socket, const wfp::MessageBuffers& message) {
    WSABUF data;
    WSAMSG wsamsg = to_wsamsg(message, data);
    DWORD bytes = 0;
    const int rc = WSASendMsg(static_cast<SOCKET>(socket), &wsamsg, 0, &bytes, nullptr, nullptr);
    return answer(rc, bytes);
}

constexpr wfp::WinsockOps kWs2Ops{nullptr,          &ws2_ioctl,       &ws2_getsockopt,
                                  &ws2_getsockname, &ws2_getpeername, &ws2_setsockopt,
                                  &ws2_recvmsg,     &ws2_sendmsg};

} // namespace

const wfp::WinsockOps& real_winsock_ops() { return kWs2Ops; }

} // namespace wfpredirect::core
