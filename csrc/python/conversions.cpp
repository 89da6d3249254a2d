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

PyObject* import_class(const py::module_& module, const char* name) {
    return py::object(module.attr(name)).release().ptr();
}

} // namespace

void init_conversions() {
    const py::module_ records = py::module_::import("wfpredirect._records");
    redirect_records_type = import_class(records, "RedirectRecords");
    redirect_info_type = import_class(records, "RedirectInfo");
    datagram_type = import_class(records, "Datagram");
}

py::object to_redirect_records(const std::uint8_t* data, std::size_t size) {
    py::bytes raw(reinterpret_cast<const char*>(data), size);
    PyObject* records = PyObject_CallOneArg(redirect_records_type, raw.ptr());
    if (records == nullptr)
        throw py::error_already_set();
    return py::reinterpret_steal<py::object>(records);
}

namespace {

// An instance of NamedTuple class `type` holding `items`. A NamedTuple is a
// tuple subclass without fields of its own: tuple's own tp_new makes it from
// the packed items, as tuple.__new__(type, items) does, without the
// generated Python __new__ (which costs more than the system calls of a
// query) or a method lookup.
template <std::size_t N> py::object to_named_tuple(PyObject* type, const py::object (&items)[N]) {
    py::tuple packed(N);
    for (std::size_t i = 0; i < N; ++i)
        PyTuple_SET_ITEM(packed.ptr(), static_cast<Py_ssize_t>(i), items[i].inc_ref().ptr());
    PyObject* arguments = PyTuple_Pack(1, packed.ptr());
    if (arguments == nullptr)
        throw py::error_already_set();
    PyObject* instance =
        PyTuple_Type.tp_new(reinterpret_cast<PyTypeObject*>(type), arguments, nullptr);
    Py_DECREF(arguments);
    if (instance == nullptr)
        throw py::error_already_set();
    return py::reinterpret_steal<py::object>(instance);
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

py::tuple to_address_tuple(const core::SocketAddress& address) {
    char host[core::kHostTextSize];
    core::format_host(address, host);
    // The C API directly: pybind11's make_tuple casts each item through its
    // type casters, which costs as much as the rest of a query.
    const auto steal = [](PyObject* object) {
        if (object == nullptr)
            throw py::error_already_set();
        return py::reinterpret_steal<py::object>(object);
    };
    const py::object text =
        steal(PyUnicode_DecodeASCII(host, static_cast<Py_ssize_t>(std::strlen(host)), nullptr));
    const py::object port = steal(PyLong_FromLong(address.port));
    if (address.version == core::IpVersion::v4)
        return py::reinterpret_steal<py::tuple>(
            steal(PyTuple_Pack(2, text.ptr(), port.ptr())).release());
    const py::object flowinfo = steal(PyLong_FromUnsignedLong(address.flowinfo));
    const py::object scope_id = steal(PyLong_FromUnsignedLong(address.scope_id));
    return py::reinterpret_steal<py::tuple>(
        steal(PyTuple_Pack(4, text.ptr(), port.ptr(), flowinfo.ptr(), scope_id.ptr())).release());
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
