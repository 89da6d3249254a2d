"""What the winsock backend (Windows, WFP) does its own way: see _backend.
The marks are netfilter's; this backend ignores them."""

from __future__ import annotations

import contextlib
import errno
import socket
import struct
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ._errors import UnsupportedError

WSAEOPNOTSUPP = 10045  # winerror.h
#: struct linger {u_short l_onoff; u_short l_linger;} (winsock2.h): on, zero seconds.
_LINGER_NOW = struct.pack("HH", 1, 0)

if TYPE_CHECKING:
    from ._backend import SplicePipe
    from .cli._doctor import Finding

#: The Proactor loop (Windows' default) has no add_reader, which the splice
#: path needs: the streams path, as before, and the protocol path.
relay_paths: tuple[str, ...] = ("streams", "protocol")

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
    from .cli._doctor_winsock import checks

    return checks()


def run_demo(keep_running: bool) -> int:
    from .cli._doctor import run_doctor

    print(WINDOWS_EXPLANATION)
    return run_doctor()


def proxy_problem(
    loop_mark: int | None, mark_mask: int | None, udp: bool, transparent: bool
) -> str:
    if transparent:
        return (
            "--transparent and --keep-client-address are Linux's (IP_TRANSPARENT: a TPROXY "
            "listener, an upstream bound to the client's address)"
        )
    return ""


def make_transparent(sock: socket.socket, function: str) -> None:
    raise _unsupported(
        f"{function}: transparent=True is Linux's (IP_TRANSPARENT): Windows cannot bind "
        "an upstream connection to an address it does not have"
    )


def _unsupported(message: str) -> UnsupportedError:
    """UnsupportedError with WSAEOPNOTSUPP, as the native calls raise it."""
    error = UnsupportedError(WSAEOPNOTSUPP, message)
    setattr(error, "winerror", WSAEOPNOTSUPP)  # noqa: B010 - Windows-only in the stubs
    return error


def prepare_reply_socket(sock: socket.socket) -> None:
    raise _unsupported(
        "datagram_reply_socket: Windows has no transparent bind (IP_TRANSPARENT): answer a "
        "redirected flow from the socket that received it"
    )


def transparent_listener(host: str, port: int, reuse_port: bool = False) -> socket.socket:
    raise UnsupportedError(errno.EOPNOTSUPP, "transparent_listener: IP_TRANSPARENT is Linux's")


def missing_exemption(loop_mark: int) -> str:
    return (
        "the callout driver redirected it although it carries the redirect records: "
        "the driver must let such connections pass (FwpsQueryConnectionRedirectState)"
    )


def open_splice_pipe() -> SplicePipe | None:
    return None


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


def reset_on_close(sock: Any) -> None:
    with contextlib.suppress(OSError, ValueError):  # gone (uvloop: ValueError)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_NOW)


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
