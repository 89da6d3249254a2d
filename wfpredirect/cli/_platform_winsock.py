"""What the command line does its own way on Windows (WFP): see _platform."""

from __future__ import annotations

import errno
from collections.abc import Callable
from typing import TYPE_CHECKING

from .._errors import UnsupportedError

if TYPE_CHECKING:
    from ._doctor import Finding

#: Windows lacks the native relay, which is Linux's: the protocol path,
#: then the streams path. ``auto`` picks protocol: on the Proactor loop
#: (benchmarks/bench_windows_relay.py, under Wine) it took less of the relay
#: process's CPU per MiB in 4 of 5 runs (0.91x in the shipped one) and was
#: no slower beyond the runs' noise; on Linux the same code moves 3x the
#: MiB/s of streams, which passes each chunk through a StreamReader, a task
#: switch and a drain (figures and the caveats in docs/performance.md).
relay_paths: tuple[str, ...] = ("protocol", "streams")

# On Windows a connection reaches a transparent proxy only through a WFP
# callout driver, which no demo can install: the demo says what the driver
# must do, then runs the doctor.
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


def doctor_checks() -> list[Finding]:
    from ._doctor_winsock import checks

    return checks()


def run_demo(keep_running: bool) -> int:
    from ._doctor import run_doctor

    print(WINDOWS_EXPLANATION)
    return run_doctor(doctor_checks)


def proxy_problem(
    loop_mark: int | None, mark_mask: int | None, udp: bool, transparent: bool
) -> str:
    if transparent:
        return (
            "--transparent and --keep-client-address are Linux's (IP_TRANSPARENT: a TPROXY "
            "listener, an upstream bound to the client's address)"
        )
    return ""


def workers_problem(workers: int) -> str:
    if workers > 1:
        return (
            "--workers is Linux's (each worker its own SO_REUSEPORT listener): "
            "on Windows the proxy runs as one process"
        )
    return ""


def hold_signals(signums: tuple[int, ...], held: bool) -> None:
    """Nothing: Windows has no workers."""


def watch_parent(parent: int) -> None:
    """Nothing: Windows has no workers."""


def start_worker(work: Callable[[], int]) -> int:
    raise UnsupportedError(errno.EOPNOTSUPP, "start_worker: --workers is Linux's")


#: What raise_descriptor_limit answers: Windows has no per-process limit on
#: sockets (they are handles); the caps are derived from this figure, the
#: number of ports one address has for upstream connections.
NOMINAL_DESCRIPTORS = 65536


def raise_descriptor_limit() -> int:
    return NOMINAL_DESCRIPTORS


def privileges_problem(user: str | None) -> str:
    return ""  # --user is refused when parsed on Windows


def keep_privileges(
    transparent: bool, user: str | None, relaying: bool = True, binding: bool = False
) -> tuple[str, str] | None:
    """Nothing: Windows has no capabilities (run as a service account)."""
    return None


def end_binding() -> None:
    """Nothing, as keep_privileges."""
