#include "conversions.hpp"

namespace wfpredirect::python {
namespace {

// Strong references taken once at import and never written again.
PyObject* redirect_records_type = nullptr; // a bytes subclass
PyObject* datagram_type = nullptr;         // a NamedTuple

PyObject* import_class(const py::module_& module, const char* name) {
    return py::object(module.attr(name)).release().ptr();
}

} // namespace

void init_conversions() {
    const py::module_ records = py::module_::import("wfpredirect._records");
    redirect_records_type = import_class(records, "RedirectRecords");
    datagram_type = import_class(records, "Datagram");
}

py::object to_redirect_records(const std::uint8_t* data, std::size_t size) {
    py::bytes raw(reinterpret_cast<const char*>(data), size);
    PyObject* records = PyObject_CallOneArg(redirect_records_type, raw.ptr());
    if (records == nullptr)
        throw py::error_already_set();
    return py::reinterpret_steal<py::object>(records);
}

py::object to_datagram(py::object data, py::object address, py::object records, py::object context,
                       py::object original_destination) {
    PyObject* datagram = PyTuple_Pack(5, data.ptr(), address.ptr(), records.ptr(), context.ptr(),
                                      original_destination.ptr());
    if (datagram == nullptr)
        throw py::error_already_set();
    // A NamedTuple is a tuple subclass without its own fields: re-type the
    // packed tuple through tuple.__new__, as NamedTuple._make does.
    py::object items = py::reinterpret_steal<py::object>(datagram);
    PyObject* typed = PyObject_CallMethod(reinterpret_cast<PyObject*>(&PyTuple_Type), "__new__",
                                          "OO", datagram_type, items.ptr());
    if (typed == nullptr)
        throw py::error_already_set();
    return py::reinterpret_steal<py::object>(typed);
}

py::tuple to_address_tuple(const core::SocketAddress& address) {
    char host[core::kHostTextSize];
    core::format_host(address, host);
    if (address.version == core::IpVersion::v4)
        return py::make_tuple(py::str(host), address.port);
    return py::make_tuple(py::str(host), address.port, address.flowinfo, address.scope_id);
}

} // namespace wfpredirect::python
