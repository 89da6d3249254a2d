// The explicit table of Winsock calls every WFP operation makes (docs/design.md,
// "The OS boundary on Windows"). Portable: no Winsock header. ws2_32.cpp has
// the real table; tests/windows/scripted_stack.cpp a scripted one.
#pragma once

#include <cstdint>

namespace wfpredirect::core::wfp {

// What one Winsock call answered: rc is 0 or SOCKET_ERROR; error is
// WSAGetLastError() when rc is not 0; bytes is what the call reported back
// (WSAIoctl's lpcbBytesReturned, getsockopt's/getsockname's length), also on
// failure, where a too-small answer may carry the required size.
struct WinsockAnswer {
    int rc;
    std::uint32_t error;
    std::uint32_t bytes;
};

// One WSAMSG's buffers: the address, one data buffer and the control
// buffer. WSARecvMsg updates name_size, control_size and flags.
struct MessageBuffers {
    void* name = nullptr;
    std::uint32_t name_size = 0;
    std::uint8_t* data = nullptr;
    std::uint32_t data_size = 0;
    std::uint8_t* control = nullptr;
    std::uint32_t control_size = 0;
    std::uint32_t flags = 0;
};

// The Winsock calls the operations make, each given `context` back (the
// scripted stack's state; unused by the real ws2_32 table). Passed to every
// operation, never installed globally, so concurrent callers (free-threaded
// Python, tests) cannot disturb each other.
struct WinsockOps {
    void* context;
    WinsockAnswer (*ioctl)(void* context, std::uintptr_t socket, std::uint32_t code, const void* in,
                           std::uint32_t in_size, void* out, std::uint32_t out_size,
                           void* overlapped);
    WinsockAnswer (*getsockopt)(void* context, std::uintptr_t socket, int level, int name,
                                void* out, std::uint32_t out_size);
    WinsockAnswer (*getsockname)(void* context, std::uintptr_t socket, void* out,
                                 std::uint32_t out_size);
    WinsockAnswer (*getpeername)(void* context, std::uintptr_t socket, void* out,
                                 std::uint32_t out_size);
    WinsockAnswer (*setsockopt)(void* context, std::uintptr_t socket, int level, int name,
                                const void* value, std::uint32_t size);
    // WSARecvMsg (found through SIO_GET_EXTENSION_FUNCTION_POINTER);
    // bytes is what it received.
    WinsockAnswer (*recvmsg)(void* context, std::uintptr_t socket, MessageBuffers& message);
    // WSASendMsg; the buffers are only read. bytes is what it sent.
    WinsockAnswer (*sendmsg)(void* context, std::uintptr_t socket, const MessageBuffers& message);
};

} // namespace wfpredirect::core::wfp
