#include "conversions.hpp"

namespace wfpredirect::python {

py::tuple to_address_tuple(const core::SocketAddress& address) {
    char host[core::kHostTextSize];
    core::format_host(address, host);
    if (address.version == core::IpVersion::v4)
        return py::make_tuple(py::str(host), address.port);
    return py::make_tuple(py::str(host), address.port, address.flowinfo, address.scope_id);
}

} // namespace wfpredirect::python
