"""``python -m wfpredirect demo``: the whole flow on this machine.

On Linux (_demo_netfilter) a throw-away network namespace with an nft
redirect, an HTTP origin and the proxy, driven by real clients. On Windows
the redirect needs a WFP callout driver, which no demo can install: it says
what the driver must do, then runs the doctor.
"""

from __future__ import annotations

from ._core import BACKEND
from ._doctor import run_doctor

WINDOWS_EXPLANATION = """\
wfpredirect demo on Windows

On Windows a connection reaches a transparent proxy only through a WFP
callout driver: at the ALE connect-redirect layer (FWPM_LAYER_ALE_CONNECT_REDIRECT_V4/V6)
it rewrites the connection's remote address to the proxy's listening
address and stores the redirect records (FwpsRedirectHandleCreate,
FwpsQueryConnectionRedirectState). Microsoft's WFPSampler does this, and
stores the original addresses in the redirect context.

Then run the proxy on the address the driver redirects to:

    python -m wfpredirect proxy --listen 127.0.0.1:15001

It reads each connection's records and context (SIO_QUERY_WFP_CONNECTION_REDIRECT_*)
and attaches the records to its upstream connection
(SIO_SET_WFP_CONNECTION_REDIRECT_RECORDS), so that the driver recognises
the upstream and lets it pass instead of redirecting it again.

What this machine offers (python -m wfpredirect doctor):
"""


def run_demo(keep_running: bool = False) -> int:
    """Run the demonstration for this backend; the exit status. With
    `keep_running` the Linux demo stays up until SIGINT/SIGTERM."""
    if BACKEND == "netfilter":
        from ._demo_netfilter import run_netfilter_demo

        return run_netfilter_demo(keep_running)
    if BACKEND == "winsock":
        print(WINDOWS_EXPLANATION)
        return run_doctor()
    print(
        "wfpredirect has no backend on this platform: it redirects with netfilter on Linux "
        "and with the Windows Filtering Platform on Windows."
    )
    return 1
