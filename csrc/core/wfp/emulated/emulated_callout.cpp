#include "emulated_callout.hpp"

#include <winsock2.h>
#include <ws2tcpip.h>

#include <cstring>

#include "../../common/control_messages.hpp"
#include "../../common/wfpsampler_context.hpp"
#include "../constants.hpp"
#include "../ws2_32.hpp"

namespace wfpredirect::core::emulated {
namespace {

struct Entry {
    Redirect redirect;
    // WFP hands a UDP flow's redirect state to its first datagram only.
    bool datagram_state_delivered = false;
};

struct EnabledSocket {
    std::uintptr_t socket;
    int level;
};

// The emulated driver's state: one per process, as a driver's is one per
// machine. Every entry point takes the lock; the Winsock calls it forwards
// run outside it. An SRW lock, which every Windows toolchain has (mingw-w64's
// win32 thread model has no std::mutex).
struct State {
    SRWLOCK lock = SRWLOCK_INIT;
    std::uint32_t not_redirected_error = wfp::kFwpENotFound;
    std::vector<Entry> entries;
    std::vector<SetCall> sets;
    std::vector<SentRecords> sent;
    std::vector<EnabledSocket> enabled;
    std::uint32_t wfp_ioctls = 0;
    CallCounts calls;
};

class Held {
  public:
    explicit Held(SRWLOCK& lock) : lock_(lock) { AcquireSRWLockExclusive(&lock_); }
    Held(const Held&) = delete;
    Held& operator=(const Held&) = delete;
    ~Held() { ReleaseSRWLockExclusive(&lock_); }

  private:
    SRWLOCK& lock_;
};

State& state() {
    static State instance;
    return instance;
}

bool same_endpoint(const SocketAddress& a, const SocketAddress& b) {
    const SocketAddress x = unmap_ipv4(a);
    const SocketAddress y = unmap_ipv4(b);
    return x.version == y.version && x.port == y.port &&
           std::memcmp(x.address, y.address, x.address_size()) == 0;
}

bool decode(const sockaddr_storage& storage, int length, SocketAddress& out) {
    return length > 0 && wfp::decode_windows_sockaddr(
                             reinterpret_cast<const std::uint8_t*>(&storage),
                             static_cast<std::size_t>(length), out) == wfp::SockaddrProblem::none;
}

// The connection's client, as the real stack reports it; false with the
// stack's error when the socket has none (unconnected, listening, bad).
bool peer_of(std::uintptr_t socket, SocketAddress& out, std::uint32_t& error) {
    sockaddr_storage storage{};
    int length = sizeof storage;
    if (::getpeername(static_cast<SOCKET>(socket), reinterpret_cast<sockaddr*>(&storage),
                      &length) != 0) {
        error = static_cast<std::uint32_t>(WSAGetLastError());
        return false;
    }
    if (!decode(storage, length, out)) {
        error = wfp::kWsaEafnosupport;
        return false;
    }
    return true;
}

bool has_name(std::uintptr_t socket) {
    sockaddr_storage storage{};
    int length = sizeof storage;
    return ::getsockname(static_cast<SOCKET>(socket), reinterpret_cast<sockaddr*>(&storage),
                         &length) == 0;
}

bool has_peer(std::uintptr_t socket) {
    SocketAddress ignored;
    std::uint32_t error = 0;
    return peer_of(socket, ignored, error);
}

void count(std::uint32_t CallCounts::* counter) {
    State& s = state();
    const Held held(s.lock);
    ++(s.calls.*counter);
}

Entry* find(State& s, const SocketAddress& peer) {
    for (Entry& entry : s.entries)
        if (same_endpoint(entry.redirect.peer, peer))
            return &entry;
    return nullptr;
}

wfp::WinsockAnswer failed(std::uint32_t error, std::uint32_t bytes = 0) {
    return {SOCKET_ERROR, error, bytes};
}

// SIO_QUERY_WFP_CONNECTION_REDIRECT_RECORDS / _CONTEXT on an accepted socket.
wfp::WinsockAnswer query(std::uintptr_t socket, bool context, void* out, std::uint32_t out_size) {
    SocketAddress peer;
    std::uint32_t error = 0;
    if (!peer_of(socket, peer, error))
        return failed(error);
    State& s = state();
    const Held held(s.lock);
    const Entry* entry = find(s, peer);
    if (entry == nullptr || (context && !entry->redirect.has_context))
        return failed(s.not_redirected_error);
    const std::vector<std::uint8_t>& answer =
        context ? entry->redirect.context : entry->redirect.records;
    const auto size = static_cast<std::uint32_t>(answer.size());
    if (out == nullptr || out_size < size) {
        // ERROR_INSUFFICIENT_BUFFER reports the size; the others do not.
        const std::uint32_t too_small = entry->redirect.too_small_error;
        return failed(too_small, too_small == wfp::kErrorInsufficientBuffer ? size : 0);
    }
    std::memcpy(out, answer.data(), size);
    return {0, 0, size};
}

wfp::WinsockAnswer set(std::uintptr_t socket, const void* in, std::uint32_t in_size) {
    if (in == nullptr || in_size == 0)
        return failed(wfp::kWsaEinval);
    const bool bound = has_name(socket);
    const bool connected = has_peer(socket);
    const auto* bytes = static_cast<const std::uint8_t*>(in);
    State& s = state();
    const Held held(s.lock);
    s.sets.push_back({socket, std::vector<std::uint8_t>(bytes, bytes + in_size), bound, connected});
    return {0, 0, 0};
}

wfp::WinsockAnswer emulated_ioctl(void* context, std::uintptr_t socket, std::uint32_t code,
                                  const void* in, std::uint32_t in_size, void* out,
                                  std::uint32_t out_size, void* overlapped) {
    const bool wfp_code = code == wfp::kSioQueryRedirectRecords ||
                          code == wfp::kSioQueryRedirectContext ||
                          code == wfp::kSioSetRedirectRecords;
    if (!wfp_code) {
        count(&CallCounts::others);
        return real_winsock_ops().ioctl(context, socket, code, in, in_size, out, out_size,
                                        overlapped);
    }
    {
        State& s = state();
        const Held held(s.lock);
        ++s.wfp_ioctls;
        if (code == wfp::kSioQueryRedirectRecords)
            ++s.calls.records_queries;
        else if (code == wfp::kSioQueryRedirectContext)
            ++s.calls.context_queries;
        else
            ++s.calls.sets;
    }
    if (code == wfp::kSioSetRedirectRecords)
        return set(socket, in, in_size);
    return query(socket, code == wfp::kSioQueryRedirectContext, out, out_size);
}

// getsockopt(SOL_IP or SOL_IPV6, SO_ORIGINAL_DST) answers the original
// destination in the socket's own family (IPv4-mapped on a dual-stack
// socket) for a redirect that has the option; everything else is ws2_32's.
wfp::WinsockAnswer emulated_getsockopt(void* context, std::uintptr_t socket, int level, int name,
                                       void* out, std::uint32_t out_size) {
    if (name == wfp::kWindowsSoOriginalDst &&
        (level == wfp::kWindowsSolIp || level == wfp::kWindowsSolIpv6)) {
        count(&CallCounts::original_dst_options);
        SocketAddress peer;
        std::uint32_t error = 0;
        if (peer_of(socket, peer, error)) {
            State& s = state();
            const Held held(s.lock);
            const Entry* entry = find(s, peer);
            if (entry != nullptr && entry->redirect.original_dst_option) {
                SocketAddress original = unmap_ipv4(entry->redirect.original_destination);
                if (level == wfp::kWindowsSolIpv6 && original.version == IpVersion::v4) {
                    SocketAddress mapped;
                    mapped.version = IpVersion::v6;
                    mapped.address[10] = mapped.address[11] = 0xFF;
                    std::memcpy(mapped.address + 12, original.address, 4);
                    mapped.port = original.port;
                    original = mapped;
                }
                std::uint8_t encoded[wfp::kWindowsSockaddrIn6Size] = {};
                const std::size_t size = wfp::encode_windows_sockaddr(original, encoded);
                if (out == nullptr || out_size < size)
                    return failed(wfp::kWsaEfault);
                std::memcpy(out, encoded, size);
                return {0, 0, static_cast<std::uint32_t>(size)};
            }
        }
    } else {
        count(&CallCounts::others);
    }
    return real_winsock_ops().getsockopt(context, socket, level, name, out, out_size);
}

wfp::WinsockAnswer emulated_getsockname(void* context, std::uintptr_t socket, void* out,
                                        std::uint32_t out_size) {
    count(&CallCounts::getsocknames);
    return real_winsock_ops().getsockname(context, socket, out, out_size);
}

wfp::WinsockAnswer emulated_getpeername(void* context, std::uintptr_t socket, void* out,
                                        std::uint32_t out_size) {
    count(&CallCounts::getpeernames);
    return real_winsock_ops().getpeername(context, socket, out, out_size);
}

// IP_WFP_REDIRECT_RECORDS / _CONTEXT = 1 at IPPROTO_IP or IPPROTO_IPV6 turn
// on the datagram state for that socket, as the real options do.
wfp::WinsockAnswer emulated_setsockopt(void* context, std::uintptr_t socket, int level, int name,
                                       const void* value, std::uint32_t size) {
    const bool wfp_option =
        (level == wfp::kWindowsIpprotoIp || level == wfp::kWindowsIpprotoIpv6) &&
        (name == wfp::kIpWfpRedirectRecords || name == wfp::kIpWfpRedirectContext);
    if (!wfp_option) {
        count(&CallCounts::others);
        return real_winsock_ops().setsockopt(context, socket, level, name, value, size);
    }
    if (value == nullptr || size < sizeof(DWORD))
        return failed(wfp::kWsaEfault);
    State& s = state();
    const Held held(s.lock);
    s.enabled.push_back({socket, level});
    return {0, 0, 0};
}

bool datagram_state_enabled(const State& s, std::uintptr_t socket) {
    for (const EnabledSocket& enabled : s.enabled)
        if (enabled.socket == socket)
            return true;
    return false;
}

// A real WSARecvMsg; the first datagram of a redirected flow then carries
// the flow's records and context as control messages, at the level of the
// datagram's IP version, as the real stack delivers them.
wfp::WinsockAnswer emulated_recvmsg(void* context, std::uintptr_t socket,
                                    wfp::MessageBuffers& message) {
    count(&CallCounts::others);
    const std::uint32_t control_capacity = message.control_size;
    const wfp::WinsockAnswer answer = real_winsock_ops().recvmsg(context, socket, message);
    // A first datagram too long for the buffer takes the flow's state with
    // it (WSAEMSGSIZE): the state is spent, as the real stack's would be.
    const bool lost = answer.rc != 0 && answer.error == wfp::kWsaEmsgsize;
    if (answer.rc != 0 && !lost)
        return answer;
    SocketAddress source;
    if (message.name == nullptr ||
        wfp::decode_windows_sockaddr(static_cast<const std::uint8_t*>(message.name),
                                     message.name_size, source) != wfp::SockaddrProblem::none)
        return answer;
    State& s = state();
    const Held held(s.lock);
    Entry* entry = find(s, source);
    if (entry == nullptr || entry->datagram_state_delivered || !datagram_state_enabled(s, socket))
        return answer;
    entry->datagram_state_delivered = true;
    if (lost)
        return answer;
    const int level = unmap_ipv4(source).version == IpVersion::v4 ? wfp::kWindowsIpprotoIp
                                                                  : wfp::kWindowsIpprotoIpv6;
    std::size_t offset = message.control_size;
    const auto append = [&](int type, const std::vector<std::uint8_t>& data) {
        const std::size_t next = append_control_message(message.control, control_capacity, offset,
                                                        level, type, data.data(), data.size());
        if (next == 0)
            message.flags |= wfp::kWindowsMsgCtrunc;
        else
            offset = next;
    };
    append(wfp::kIpWfpRedirectRecords, entry->redirect.records);
    if (entry->redirect.has_context)
        append(wfp::kIpWfpRedirectContext, entry->redirect.context);
    message.control_size = static_cast<std::uint32_t>(offset);
    return answer;
}

// Notes each IP_WFP_REDIRECT_RECORDS control message, then sends for real.
wfp::WinsockAnswer emulated_sendmsg(void* context, std::uintptr_t socket,
                                    const wfp::MessageBuffers& message) {
    count(&CallCounts::others);
    SocketAddress destination;
    if (message.name != nullptr)
        (void)wfp::decode_windows_sockaddr(static_cast<const std::uint8_t*>(message.name),
                                           message.name_size, destination);
    {
        State& s = state();
        const Held held(s.lock);
        ControlMessageReader reader(message.control, message.control_size);
        ControlMessage control;
        while (reader.next(control))
            if (control.type == wfp::kIpWfpRedirectRecords &&
                (control.level == wfp::kWindowsIpprotoIp ||
                 control.level == wfp::kWindowsIpprotoIpv6))
                s.sent.push_back(
                    {socket, control.level,
                     std::vector<std::uint8_t>(control.data, control.data + control.size),
                     destination});
        if (reader.malformed())
            return failed(wfp::kWsaEinval);
    }
    return real_winsock_ops().sendmsg(context, socket, message);
}

constexpr wfp::WinsockOps kEmulatedOps{nullptr,
                                       &emulated_ioctl,
                                       &emulated_getsockopt,
                                       &emulated_getsockname,
                                       &emulated_getpeername,
                                       &emulated_setsockopt,
                                       &emulated_recvmsg,
                                       &emulated_sendmsg};

} // namespace

void reset(std::uint32_t not_redirected_error) {
    State& s = state();
    const Held held(s.lock);
    s.not_redirected_error = not_redirected_error;
    s.entries.clear();
    s.sets.clear();
    s.sent.clear();
    s.enabled.clear();
    s.wfp_ioctls = 0;
    s.calls = CallCounts{};
    original_dst_support().forget();
}

void add(const Redirect& redirect) {
    State& s = state();
    const Held held(s.lock);
    s.entries.push_back({redirect, false});
}

std::vector<SetCall> set_calls() {
    State& s = state();
    const Held held(s.lock);
    return s.sets;
}

std::vector<SentRecords> sent_records() {
    State& s = state();
    const Held held(s.lock);
    return s.sent;
}

std::uint32_t wfp_ioctl_count() {
    State& s = state();
    const Held held(s.lock);
    return s.wfp_ioctls;
}

CallCounts call_counts() {
    State& s = state();
    const Held held(s.lock);
    return s.calls;
}

wfp::OriginalDstSupport& original_dst_support() {
    static wfp::OriginalDstSupport instance;
    return instance;
}

const wfp::WinsockOps& ops() { return kEmulatedOps; }

} // namespace wfpredirect::core::emulated
