#include "../core/wfp/constants.hpp"
#include "../core/operations.hpp"
#include "operations.hpp"

namespace wfpredirect::python {

void init_constants(py::module_& module) {
    namespace wfp = core::wfp;
    module.attr("BACKEND") = core::kBackendName;
    module.attr("SIO_QUERY_WFP_CONNECTION_REDIRECT_RECORDS") = wfp::kSioQueryRedirectRecords;
    module.attr("SIO_QUERY_WFP_CONNECTION_REDIRECT_CONTEXT") = wfp::kSioQueryRedirectContext;
    module.attr("SIO_SET_WFP_CONNECTION_REDIRECT_RECORDS") = wfp::kSioSetRedirectRecords;
    module.attr("IP_WFP_REDIRECT_RECORDS") = wfp::kIpWfpRedirectRecords;
    module.attr("IP_WFP_REDIRECT_CONTEXT") = wfp::kIpWfpRedirectContext;
    module.attr("_DATAGRAM_STATE_ON_FIRST_ONLY") = core::kDatagramStateOnFirstOnly;
    // Availability: Windows, Linux.
    if (core::kSoOriginalDst != 0)
        module.attr("SO_ORIGINAL_DST") = core::kSoOriginalDst;
}

} // namespace wfpredirect::python
