// Hand conversion of the arguments every operation takes: socket handles
// and caller buffers (docs/design.md: "Handles are converted by hand").
#pragma once

#include <cstddef>
#include <cstdint>

#include <pybind11/pybind11.h>

#include "../core/operations.hpp"

namespace wfpredirect::python {

namespace py = pybind11;

// An int (not a bool) or an object whose fileno() returns one; anything
// else is a TypeError before any system call.
core::SocketHandle to_socket_handle(PyObject* sock, const char* function);

// A buffer held for the duration of a call. Released on destruction.
class HeldBuffer {
  public:
    HeldBuffer(HeldBuffer&& other) noexcept : view_(other.view_) { other.view_ = Py_buffer{}; }
    HeldBuffer(const HeldBuffer&) = delete;
    HeldBuffer& operator=(const HeldBuffer&) = delete;
    ~HeldBuffer() { PyBuffer_Release(&view_); }

    std::uint8_t* data() const { return static_cast<std::uint8_t*>(view_.buf); }
    std::size_t size() const { return static_cast<std::size_t>(view_.len); }

    // A writable C-contiguous buffer (bytearray, memoryview, array, mmap):
    // read-only or strided is a TypeError, as socket.recv_into does.
    static HeldBuffer writable(PyObject* buffer, const char* function);
    // Any C-contiguous bytes-like object, read in place.
    static HeldBuffer readable(PyObject* buffer, const char* function, const char* what);

  private:
    HeldBuffer() = default;
    Py_buffer view_{};
};

} // namespace wfpredirect::python
