// The Windows Filtering Platform numbers, defined once for every platform:
// the Python constants come from here, and so does the Windows backend.
// mingw-w64 lacks the three IOCTL codes and SO_ORIGINAL_DST/SOL_IP (docs/design.md).
#pragma once

#include <cstddef>
#include <cstdint>

namespace wfpredirect::core::wfp {

// _WSAIOW(IOC_VENDOR, 220/221/222) from mstcpip.h.
constexpr std::uint32_t kSioQueryRedirectRecords = 0x980000DCu;
constexpr std::uint32_t kSioQueryRedirectContext = 0x980000DDu;
constexpr std::uint32_t kSioSetRedirectRecords = 0x980000DEu;

// One row per WFP IOCTL: its code, the call as errors name it, and for a
// query the clause an answer past the 64 KiB cap (kMaxQuerySize) gets. The
// operations in connections.cpp take a row; nothing else is written per
// IOCTL.
struct WfpIoctl {
    std::uint32_t code;
    const char* call;
    const char* over_cap;
};

constexpr WfpIoctl kQueryRecordsIoctl{
    kSioQueryRedirectRecords,
    "WSAIoctl(SIO_QUERY_WFP_CONNECTION_REDIRECT_RECORDS)",
    "the records exceed the 64 KiB cap",
};
constexpr WfpIoctl kQueryContextIoctl{
    kSioQueryRedirectContext,
    "WSAIoctl(SIO_QUERY_WFP_CONNECTION_REDIRECT_CONTEXT)",
    "the context exceeds the 64 KiB cap",
};
constexpr WfpIoctl kSetRecordsIoctl{
    kSioSetRedirectRecords,
    "WSAIoctl(SIO_SET_WFP_CONNECTION_REDIRECT_RECORDS)",
    nullptr,
};

// ws2ipdef.h: socket options at IPPROTO_IP (and IPPROTO_IPV6, same numbers)
// that ask WSARecvMsg for a datagram's redirect records and context.
constexpr int kIpWfpRedirectRecords = 60;
constexpr int kIpWfpRedirectContext = 70;

// Windows' own SO_ORIGINAL_DST (recent builds only) and the levels it is
// read at: SOL_IP and SOL_IPV6 in ws2def.h of newer SDKs.
constexpr int kWindowsSoOriginalDst = 0x300F;
constexpr int kWindowsSolIp = 0xFFFB;
constexpr int kWindowsSolIpv6 = 0xFFFA;

// Levels and options the datagram calls use (ws2def.h, ws2ipdef.h).
constexpr int kWindowsIpprotoIp = 0;
constexpr int kWindowsIpprotoIpv6 = 41;
constexpr int kWindowsIpv6V6only = 27;
constexpr int kWindowsSolSocket = 0xFFFF;
constexpr int kWindowsSoProtocolInfoW = 0x2005;
constexpr int kWindowsSoAcceptconn = 0x0002;
// WSAPROTOCOL_INFOW's size and where its iAddressFamily sits (winsock2.h).
constexpr std::uint32_t kWindowsProtocolInfoSize = 628;
constexpr std::size_t kWindowsProtocolInfoFamilyOffset = 76;
// WSAMSG dwFlags after WSARecvMsg: the control buffer was too small.
constexpr std::uint32_t kWindowsMsgCtrunc = 0x0200;

// Windows address families as they appear inside a redirect context.
constexpr std::uint16_t kWindowsAfInet = 2;
constexpr std::uint16_t kWindowsAfInet6 = 23;

// Answers meaning "this connection was not redirected" (besides WSAEINVAL,
// which is ambiguous; see connections.cpp).
constexpr std::uint32_t kFwpENotFound = 0x80320008u;
constexpr std::uint32_t kErrorNotFound = 1168;
constexpr std::uint32_t kErrorInsufficientBuffer = 122;

// Winsock error numbers used by portable code (winerror.h values).
constexpr std::uint32_t kWsaEfault = 10014;
constexpr std::uint32_t kWsaEinval = 10022;
constexpr std::uint32_t kWsaEnobufs = 10055;
constexpr std::uint32_t kWsaEacces = 10013;
constexpr std::uint32_t kWsaEopnotsupp = 10045;
constexpr std::uint32_t kWsaEnoprotoopt = 10042;
constexpr std::uint32_t kWsaEnotsock = 10038;
constexpr std::uint32_t kWsaEnotconn = 10057;
constexpr std::uint32_t kWsaEwouldblock = 10035;
constexpr std::uint32_t kWsaEafnosupport = 10047;
constexpr std::uint32_t kWsaEmsgsize = 10040;
constexpr std::uint32_t kWsaEisconn = 10056;

} // namespace wfpredirect::core::wfp
