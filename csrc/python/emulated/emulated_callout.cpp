#include "emulated_callout.hpp"

#include <cstdint>
#include <string>
#include <vector>

#include "../../core/wfp/emulated/emulated_callout.hpp"
#include "../conversions.hpp"
#include "../errors.hpp"

namespace wfpredirect::python {
namespace {

namespace py = pybind11;
namespace emulated = core::emulated;

std::vector<std::uint8_t> to_bytes(const py::bytes& value) {
    const std::string text = value;
    return std::vector<std::uint8_t>(text.begin(), text.end());
}

py::bytes from_bytes(const std::vector<std::uint8_t>& value) {
    return py::bytes(reinterpret_cast<const char*>(value.data()), value.size());
}

void add(py::handle peer, py::handle original_destination, const py::bytes& records,
         const py::object& context, std::uint32_t too_small_error, bool original_dst_option) {
    constexpr const char* kName = "_emulated_callout_add";
    emulated::Redirect redirect;
    redirect.peer = to_socket_address(peer.ptr(), kName);
    redirect.original_destination = to_socket_address(original_destination.ptr(), kName);
    redirect.records = to_bytes(records);
    if (!context.is_none()) {
        redirect.has_context = true;
        redirect.context = to_bytes(py::bytes(context));
    }
    redirect.too_small_error = too_small_error;
    redirect.original_dst_option = original_dst_option;
    emulated::add(redirect);
}

py::list set_calls() {
    py::list out;
    for (const emulated::SetCall& call : emulated::set_calls())
        out.append(
            py::make_tuple(call.socket, from_bytes(call.records), call.bound, call.connected));
    return out;
}

py::list sent_records() {
    py::list out;
    for (const emulated::SentRecords& sent : emulated::sent_records())
        out.append(py::make_tuple(sent.socket, sent.level, from_bytes(sent.records),
                                  to_address_tuple(sent.destination)));
    return out;
}

py::dict call_counts() {
    const emulated::CallCounts counts = emulated::call_counts();
    py::dict out;
    out["records_query"] = counts.records_queries;
    out["context_query"] = counts.context_queries;
    out["set"] = counts.sets;
    out["so_original_dst"] = counts.original_dst_options;
    out["getsockname"] = counts.getsocknames;
    out["getpeername"] = counts.getpeernames;
    out["other"] = counts.others;
    return out;
}

} // namespace

void init_emulated_callout(py::module_& module) {
    module.def("_emulated_callout_reset", &emulated::reset, py::arg("not_redirected_error"),
               "Test builds only: forget every redirect and call seen; queries on connections "
               "that were not redirected answer not_redirected_error.");
    module.def("_emulated_callout_add", &add, py::arg("peer"), py::arg("original_destination"),
               py::arg("records"), py::arg("context"), py::arg("too_small_error"),
               py::arg("original_dst_option"),
               "Test builds only: the connection or UDP flow whose client is `peer` was "
               "redirected from original_destination, with these records and context.");
    module.def("_emulated_callout_sets", &set_calls,
               "Test builds only: [(socket, records, bound, connected)] of every "
               "SIO_SET_WFP_CONNECTION_REDIRECT_RECORDS.");
    module.def("_emulated_callout_sent", &sent_records,
               "Test builds only: [(socket, level, records, destination)] of every "
               "IP_WFP_REDIRECT_RECORDS control message sent.");
    module.def("_emulated_callout_wfp_ioctls", &emulated::wfp_ioctl_count,
               "Test builds only: how many of the three WFP IOCTLs were asked.");
    module.def("_emulated_callout_calls", &call_counts,
               "Test builds only: {'records_query', 'context_query', 'set', "
               "'so_original_dst', 'getsockname', 'getpeername', 'other'}: how many of each "
               "the backend asked the stack since the last reset (SO_ORIGINAL_DST at either "
               "level, answered or not; 'other': every other call forwarded to ws2_32).");
}

} // namespace wfpredirect::python
