#include "conversions.hpp"

#include <cstring>
#include <string>
#include <utility>

#include "errors.hpp"

namespace wfpredirect::python {
namespace {

// Strong references taken once at import and never written again.
PyObject* redirect_records_type = nullptr; // a bytes subclass
PyObject* redirect_info_type = nullptr;    // a NamedTuple
PyObject* datagram_type = nullptr;         // a NamedTuple
PyObject* not_redirected_info = nullptr;   // RedirectInfo(None, None, None)
PyObject* is_listener_function = nullptr;  // _addresses.is_listener_address
PyObject* any_listener_function = nullptr; // _addresses.any_listener_address

PyObject* import_class(const py::module_& module, const char* name) {
    return py::object(module.attr(name)).release().ptr();
}

py::object steal(PyObject* object) {
    if (object == nullptr)
        throw py::error_already_set();
    return py::reinterpret_steal<py::object>(object);
}

} // namespace

void init_conversions() {
    const py::module_ records = py::module_::import("wfpredirect._records");
    redirect_records_type = import_class(records, "RedirectRecords");
    redirect_info_type = import_class(records, "RedirectInfo");
    datagram_type = import_class(records, "Datagram");
    not_redirected_info = import_class(records, "NOT_REDIRECTED");
    const py::module_ addresses = py::module_::import("wfpredirect._addresses");
    is_listener_function = import_class(addresses, "is_listener_address");
    any_listener_function = import_class(addresses, "any_listener_address");
}

// Up to Python 3.13 a bytes or tuple subclass instance is made here the way
// CPython's own bytes_subtype_new and tuple_subtype_new make it (tp_alloc,
// then the contents; bytes with its hash not yet computed), without the
// temporary value, the argument tuple and the constructor's argument parsing
// around them, which cost more than the system calls of a connection. Later
// versions (whose objects may cache more) go through the constructors.
#if PY_VERSION_HEX < 0x030E0000
#define WFPREDIRECT_DIRECT_SUBTYPES 1
#endif

bool is_plain_bytes(PyObject* object) {
    return PyBytes_CheckExact(object) ||
           Py_TYPE(object) == reinterpret_cast<PyTypeObject*>(redirect_records_type);
}

py::object to_redirect_records(const std::uint8_t* data, std::size_t size) {
    auto* type = reinterpret_cast<PyTypeObject*>(redirect_records_type);
#ifdef WFPREDIRECT_DIRECT_SUBTYPES
    // tp_alloc zero-fills, the terminating NUL included.
    py::object records = steal(type->tp_alloc(type, static_cast<Py_ssize_t>(size)));
    std::memcpy(PyBytes_AS_STRING(records.ptr()), data, size);
    // The hash cache (deprecated for extensions to read, not yet removed):
    // -1, not computed, as bytes_subtype_new leaves it.
    // clang-format off
    _Py_COMP_DIAG_PUSH
    _Py_COMP_DIAG_IGNORE_DEPR_DECLS
    reinterpret_cast<PyBytesObject*>(records.ptr())->ob_shash = -1;
    _Py_COMP_DIAG_POP
        // clang-format on
        return records;
#else
    // bytes' own tp_new makes the subclass instance from a bytes value, as
    // RedirectRecords(raw) does.
    const py::object raw = steal(PyBytes_FromStringAndSize(reinterpret_cast<const char*>(data),
                                                           static_cast<Py_ssize_t>(size)));
    const py::object arguments = steal(PyTuple_New(1));
    PyTuple_SET_ITEM(arguments.ptr(), 0, raw.inc_ref().ptr());
    return steal(PyBytes_Type.tp_new(type, arguments.ptr(), nullptr));
#endif
}

namespace {

// An instance of NamedTuple class `type` holding `items`. A NamedTuple is a
// tuple subclass without fields of its own: made as tuple.__new__(type,
// items) makes it (see WFPREDIRECT_DIRECT_SUBTYPES), without the generated
// Python __new__ (which costs more than the system calls of a query) or a
// method lookup.
template <std::size_t N> py::object to_named_tuple(PyObject* type, const py::object (&items)[N]) {
    auto* tuple_type = reinterpret_cast<PyTypeObject*>(type);
#ifdef WFPREDIRECT_DIRECT_SUBTYPES
    PyObject* instance = tuple_type->tp_alloc(tuple_type, static_cast<Py_ssize_t>(N));
    if (instance == nullptr)
        throw py::error_already_set();
    for (std::size_t i = 0; i < N; ++i)
        PyTuple_SET_ITEM(instance, static_cast<Py_ssize_t>(i), items[i].inc_ref().ptr());
    return py::reinterpret_steal<py::object>(instance);
#else
    const py::object packed = steal(PyTuple_New(static_cast<Py_ssize_t>(N)));
    for (std::size_t i = 0; i < N; ++i)
        PyTuple_SET_ITEM(packed.ptr(), static_cast<Py_ssize_t>(i), items[i].inc_ref().ptr());
    const py::object arguments = steal(PyTuple_New(1));
    PyTuple_SET_ITEM(arguments.ptr(), 0, packed.inc_ref().ptr());
    return steal(PyTuple_Type.tp_new(tuple_type, arguments.ptr(), nullptr));
#endif
}

} // namespace

py::object to_redirect_info(py::object records, py::object context,
                            py::object original_destination) {
    const py::object items[] = {std::move(records), std::move(context),
                                std::move(original_destination)};
    return to_named_tuple(redirect_info_type, items);
}

py::object to_datagram(py::object data, py::object address, py::object records, py::object context,
                       py::object original_destination) {
    const py::object items[] = {std::move(data), std::move(address), std::move(records),
                                std::move(context), std::move(original_destination)};
    return to_named_tuple(datagram_type, items);
}

py::object not_redirected() { return py::reinterpret_borrow<py::object>(not_redirected_info); }

bool is_listener_address(PyObject* listening_addresses, PyObject* address, std::uint16_t port) {
    // Anything but a list or tuple of plain tuples with int ports is asked of
    // the Python rule itself; so is a listener on `port` (its host decides).
    // Without the GIL another thread may change a list while it is read: a
    // list goes to the Python rule there.
#ifdef Py_GIL_DISABLED
    const bool native = PyTuple_CheckExact(listening_addresses);
#else
    const bool native =
        PyList_CheckExact(listening_addresses) || PyTuple_CheckExact(listening_addresses);
#endif
    if (!native) {
        const py::object answer = steal(PyObject_CallFunctionObjArgs(
            any_listener_function, listening_addresses, address, nullptr));
        const int truth = PyObject_IsTrue(answer.ptr());
        if (truth < 0)
            throw py::error_already_set();
        return truth != 0;
    }
    // A list may change while the Python rule runs: read its size each time.
    for (Py_ssize_t i = 0; i < PySequence_Fast_GET_SIZE(listening_addresses); ++i) {
        const py::object listener =
            py::reinterpret_borrow<py::object>(PySequence_Fast_GET_ITEM(listening_addresses, i));
        if (listener.is_none())
            continue;
        if (PyTuple_CheckExact(listener.ptr()) && PyTuple_GET_SIZE(listener.ptr()) >= 2) {
            PyObject* listener_port = PyTuple_GET_ITEM(listener.ptr(), 1);
            if (PyLong_CheckExact(listener_port)) {
                int overflow = 0;
                const long value = PyLong_AsLongAndOverflow(listener_port, &overflow);
                if (overflow == 0 && value != port)
                    continue;
            }
        }
        const py::object answer = steal(
            PyObject_CallFunctionObjArgs(is_listener_function, listener.ptr(), address, nullptr));
        const int truth = PyObject_IsTrue(answer.ptr());
        if (truth < 0)
            throw py::error_already_set();
        if (truth)
            return true;
    }
    return false;
}

py::tuple to_address_tuple(const core::SocketAddress& address) {
    char host[core::kHostTextSize];
    core::format_host(address, host);
    // The C API directly: pybind11's make_tuple casts each item through its
    // type casters, which costs as much as the rest of a query. The host is
    // ASCII (digits, dots, hex, colons): copied into the str, not decoded.
    const std::size_t length = std::strlen(host);
    const py::object text = steal(PyUnicode_New(static_cast<Py_ssize_t>(length), 127));
    std::memcpy(PyUnicode_DATA(text.ptr()), host, length);
    const py::object port = steal(PyLong_FromLong(address.port));
    const Py_ssize_t size = address.version == core::IpVersion::v4 ? 2 : 4;
    py::object tuple = steal(PyTuple_New(size));
    PyTuple_SET_ITEM(tuple.ptr(), 0, text.inc_ref().ptr());
    PyTuple_SET_ITEM(tuple.ptr(), 1, port.inc_ref().ptr());
    if (size == 4) {
        PyTuple_SET_ITEM(tuple.ptr(), 2,
                         steal(PyLong_FromUnsignedLong(address.flowinfo)).release().ptr());
        PyTuple_SET_ITEM(tuple.ptr(), 3,
                         steal(PyLong_FromUnsignedLong(address.scope_id)).release().ptr());
    }
    return py::reinterpret_steal<py::tuple>(tuple.release());
}

core::SocketAddress to_socket_address(PyObject* address, const char* function) {
    if (!PyTuple_Check(address) ||
        (PyTuple_GET_SIZE(address) != 2 && PyTuple_GET_SIZE(address) != 4)) {
        const std::string text =
            std::string("the address must be a (host, port) or (host, port, flowinfo, "
                        "scope_id) tuple, not ") +
            Py_TYPE(address)->tp_name;
        throw_error(PyExc_TypeError, function, text.c_str());
    }
    PyObject* host = PyTuple_GET_ITEM(address, 0);
    if (!PyUnicode_Check(host))
        throw_error(PyExc_TypeError, function, "the address host must be a str");
    const char* text = PyUnicode_AsUTF8(host);
    if (text == nullptr)
        throw py::error_already_set();
    core::SocketAddress out;
    if (!core::parse_host(text, out)) {
        const std::string message =
            std::string("the address host must be a numeric IPv4 or IPv6 address (resolve "
                        "names with socket.getaddrinfo first), not '") +
            text + "'";
        throw_error(PyExc_ValueError, function, message.c_str());
    }
    const auto number = [&](Py_ssize_t index, unsigned long long limit, const char* what) {
        PyObject* item = PyTuple_GET_ITEM(address, index);
        if (!PyLong_Check(item) || PyBool_Check(item)) {
            const std::string message = std::string("the address ") + what + " must be an int";
            throw_error(PyExc_TypeError, function, message.c_str());
        }
        const unsigned long long value = PyLong_AsUnsignedLongLong(item);
        if ((value == static_cast<unsigned long long>(-1) && PyErr_Occurred()) || value > limit) {
            PyErr_Clear();
            const std::string message =
                std::string("the address ") + what + " must be 0-" + std::to_string(limit);
            throw_error(PyExc_OverflowError, function, message.c_str());
        }
        return value;
    };
    out.port = static_cast<std::uint16_t>(number(1, 65535, "port"));
    if (PyTuple_GET_SIZE(address) == 4) {
        if (out.version != core::IpVersion::v6)
            throw_error(PyExc_ValueError, function,
                        "a (host, port, flowinfo, scope_id) address needs an IPv6 host");
        // The socket module's limit: the flow label is 20 bits.
        out.flowinfo = static_cast<std::uint32_t>(number(2, 0xFFFFF, "flowinfo"));
        out.scope_id = static_cast<std::uint32_t>(number(3, 0xFFFFFFFF, "scope_id"));
    }
    return out;
}

} // namespace wfpredirect::python
