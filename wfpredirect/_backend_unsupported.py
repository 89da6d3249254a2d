"""What the unsupported backend (neither Linux nor Windows) answers: see
_backend. Every redirect call raises UnsupportedError."""

from __future__ import annotations

import contextlib
import errno
import platform
import socket
import struct
import sys
from typing import TYPE_CHECKING, Any

from ._backend_winsock import end_binding as end_binding
from ._backend_winsock import hold_signals as hold_signals
from ._backend_winsock import keep_privileges as keep_privileges

# What only Linux has (IP_TRANSPARENT, splice, workers) is refused as on Windows.
from ._backend_winsock import make_transparent as make_transparent
from ._backend_winsock import open_splice_pipe as open_splice_pipe
from ._backend_winsock import privileges_problem as privileges_problem
from ._backend_winsock import proxy_problem as proxy_problem
from ._backend_winsock import raise_descriptor_limit as raise_descriptor_limit
from ._backend_winsock import relay_paths as relay_paths
from ._backend_winsock import start_worker as start_worker
from ._backend_winsock import transparent_listener as transparent_listener
from ._backend_winsock import watch_parent as watch_parent
from ._backend_winsock import workers_problem as workers_problem
from ._errors import UnsupportedError

if TYPE_CHECKING:
    from .cli._doctor import Finding


def doctor_checks() -> list[Finding]:
    from .cli._doctor import Finding

    return [
        Finding(
            "platform",
            platform.platform(),
            problem=f"no backend for {sys.platform}: every wfpredirect call raises "
            "UnsupportedError",
            what_to_do="run the proxy on Linux (netfilter) or Windows (WFP)",
        )
    ]


def run_demo(keep_running: bool) -> int:
    print(
        "wfpredirect has no backend on this platform: it redirects with netfilter on Linux "
        "and with the Windows Filtering Platform on Windows."
    )
    return 1


def prepare_reply_socket(sock: socket.socket) -> None:
    raise UnsupportedError(
        errno.EOPNOTSUPP,
        "datagram_reply_socket: connection redirection is supported on Windows and Linux only",
    )


def missing_exemption(loop_mark: int) -> str:
    return "the redirect let the proxy's upstream connection back in"


def reset_on_close(sock: Any) -> None:
    """POSIX's struct linger {int l_onoff; int l_linger;}: on, zero seconds."""
    with contextlib.suppress(OSError, ValueError):  # gone (uvloop: ValueError)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
