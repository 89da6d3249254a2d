#include "datagrams.hpp"

#include <cstring>

#include "../common/wfpsampler_context.hpp"
#include "constants.hpp"
#include "errors.hpp"

namespace wfpredirect::core::wfp {
namespace {

constexpr const char* kRecvMsgCall = "WSARecvMsg";
constexpr const char* kSendMsgCall = "WSASendMsg";
constexpr Explanation kNotAnInetSocket = clause("not an IPv4 or IPv6 socket");

Status enable_at(const WinsockOps& ops, std::uintptr_t socket, int level) {
    static constexpr struct {
        int name;
        const char* ip_call;
        const char* ipv6_call;
    } kOptions[] = {
        {kIpWfpRedirectRecords, "setsockopt(IP_WFP_REDIRECT_RECORDS)",
         "setsockopt(IPV6_WFP_REDIRECT_RECORDS)"},
        {kIpWfpRedirectContext, "setsockopt(IP_WFP_REDIRECT_CONTEXT)",
         "setsockopt(IPV6_WFP_REDIRECT_CONTEXT)"},
    };
    const std::uint32_t on = 1; // a DWORD
    for (const auto& option : kOptions) {
        const WinsockAnswer answer =
            ops.setsockopt(ops.context, socket, level, option.name, &on, sizeof on);
        if (answer.rc == 0)
            continue;
        const char* call = level == kWindowsIpprotoIp ? option.ip_call : option.ipv6_call;
        return classify(answer.error, WinsockCall::datagram_option, call);
    }
    return Status::success(0);
}

} // namespace

Status enable_datagram_records(const WinsockOps& ops, std::uintptr_t socket) {
    std::uint16_t family = 0;
    Status status = socket_family(ops, socket, family);
    if (!status.ok())
        return status;
    if (family == kWindowsAfInet)
        return enable_at(ops, socket, kWindowsIpprotoIp);
    if (family != kWindowsAfInet6)
        return Status::failure(Outcome::os_error, kWsaEafnosupport, "getsockopt(SO_PROTOCOL_INFOW)",
                               kNotAnInetSocket);
    status = enable_at(ops, socket, kWindowsIpprotoIpv6);
    if (!status.ok())
        return status;
    std::uint32_t v6only = 0;
    const WinsockAnswer answer = ops.getsockopt(ops.context, socket, kWindowsIpprotoIpv6,
                                                kWindowsIpv6V6only, &v6only, sizeof v6only);
    if (answer.rc != 0)
        return classify(answer.error, WinsockCall::socket_option, "getsockopt(IPV6_V6ONLY)");
    // A dual-stack socket's IPv4 datagrams answer to the IPv4 options.
    return v6only ? Status::success(0) : enable_at(ops, socket, kWindowsIpprotoIp);
}

Status receive_datagram(const WinsockOps& ops, std::uintptr_t socket, std::uint8_t* data,
                        std::size_t capacity, ReceivedDatagram& out) {
    out.storage.reserve(kDatagramControlSize);
    std::uint8_t name[kWindowsSockaddrStorageSize] = {};
    MessageBuffers message;
    message.name = name;
    message.name_size = sizeof name;
    message.data = data;
    // WSABUF.len is a ULONG: a larger buffer is used up to 4 GiB - 1.
    message.data_size = capacity > 0xFFFFFFFFu ? 0xFFFFFFFFu : static_cast<std::uint32_t>(capacity);
    message.control = out.storage.data();
    message.control_size = static_cast<std::uint32_t>(kDatagramControlSize);
    const WinsockAnswer answer = ops.recvmsg(ops.context, socket, message);
    // Windows does not cut a long datagram as Linux does: WSARecvMsg fails
    // and the datagram is gone, with the redirect state it carried. Say so;
    // the control data that came with the error is not trusted.
    if (answer.rc != 0 && answer.error == kWsaEmsgsize)
        return Status::failure(Outcome::os_error, answer.error, kRecvMsgCall,
                               clause("the datagram was longer than the buffer and is lost "
                                      "(WSAEMSGSIZE), with the flow's redirect state if it was "
                                      "the flow's first; receive with a 65535-byte buffer"));
    if (answer.rc != 0)
        return classify(answer.error, WinsockCall::transfer, kRecvMsgCall);
    out.size = answer.bytes;
    out.has_original_destination = false;
    out.records = out.context = nullptr;
    out.records_size = out.context_size = 0;
    if (out.size > capacity || message.name_size > sizeof name ||
        message.control_size > kDatagramControlSize)
        return Status::failure(Outcome::os_error, kWsaEfault, kRecvMsgCall,
                               predicate("reported more bytes than its buffers hold"));
    if (message.flags & kWindowsMsgCtrunc)
        return Status::failure(Outcome::os_error, kWsaEmsgsize, kRecvMsgCall,
                               clause("the control data was cut (MSG_CTRUNC); the datagram is "
                                      "lost"));
    if (decode_windows_sockaddr(name, message.name_size, out.source) != SockaddrProblem::none)
        return Status::failure(Outcome::os_error, kWsaEafnosupport, kRecvMsgCall,
                               clause("not an IPv4 or IPv6 datagram"));

    ControlMessageReader reader(out.storage.data(), message.control_size);
    ControlMessage control;
    while (reader.next(control)) {
        if (control.level != kWindowsIpprotoIp && control.level != kWindowsIpprotoIpv6)
            continue;
        if (control.type == kIpWfpRedirectRecords && control.size != 0) {
            out.records = control.data;
            out.records_size = control.size;
        } else if (control.type == kIpWfpRedirectContext && control.size != 0) {
            out.context = control.data;
            out.context_size = control.size;
        }
    }
    if (reader.malformed())
        return Status::failure(Outcome::os_error, kWsaEinval, kRecvMsgCall,
                               clause("a control message overruns the control data"));
    SocketAddress context_local;
    if (out.context != nullptr && decode_wfpsampler_context(out.context, out.context_size,
                                                            out.original_destination, context_local)
                                      .ok()) {
        // As IPv4 for an IPv4 flow on a dual-stack socket (see connections.cpp).
        out.original_destination = unmap_ipv4(out.original_destination);
        out.has_original_destination = true;
    }
    return Status::success(out.size);
}

Status send_datagram(const WinsockOps& ops, std::uintptr_t socket, const std::uint8_t* data,
                     std::size_t size, const SocketAddress& to, const std::uint8_t* records,
                     std::size_t records_size) {
    SocketAddress destination = to;
    if (to.version == IpVersion::v4) {
        std::uint16_t family = 0;
        Status status = socket_family(ops, socket, family);
        if (!status.ok())
            return status;
        if (family == kWindowsAfInet6) {
            // ::ffff:a.b.c.d, as a dual-stack socket wants IPv4 peers.
            destination = SocketAddress{};
            destination.version = IpVersion::v6;
            destination.port = to.port;
            destination.address[10] = destination.address[11] = 0xFF;
            std::memcpy(destination.address + 12, to.address, 4);
        }
    }
    if (size > 0xFFFFFFFFu)
        return Status::failure(Outcome::os_error, kWsaEmsgsize, kSendMsgCall,
                               clause("the data is too long"));
    std::uint8_t name[kWindowsSockaddrIn6Size];
    MessageBuffers message;
    message.name = name;
    message.name_size = static_cast<std::uint32_t>(encode_windows_sockaddr(destination, name));
    message.data = const_cast<std::uint8_t*>(data);
    message.data_size = static_cast<std::uint32_t>(size);
    ByteBuffer control;
    if (records != nullptr) {
        // IPv4 traffic (an IPv4-mapped peer included) takes the IPv4 level.
        const int level = to.version == IpVersion::v4 ? kWindowsIpprotoIp : kWindowsIpprotoIpv6;
        control.reserve(control_space(records_size));
        message.control = control.data();
        message.control_size = static_cast<std::uint32_t>(
            append_control_message(control.data(), control.capacity(), 0, level,
                                   kIpWfpRedirectRecords, records, records_size));
    }
    const WinsockAnswer answer = ops.sendmsg(ops.context, socket, message);
    if (answer.rc != 0)
        return classify(answer.error, WinsockCall::transfer, kSendMsgCall);
    return Status::success(answer.bytes);
}

} // namespace wfpredirect::core::wfp
