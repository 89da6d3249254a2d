"""The exceptions every backend raises (docs/design.md, "Errors").

Every error from a system call is a :class:`RedirectError`, an ``OSError``
that keeps ``errno`` (and on Windows ``winerror``, the raw code as an
unsigned 32-bit number) and names the failing call in its message.
"""

from __future__ import annotations


class RedirectError(OSError):
    """A redirect operation failed; ``errno``/``winerror`` hold the OS code."""


class NotRedirectedError(RedirectError):
    """The connection was not redirected (or is not a connection at all)."""


class BufferTooSmallError(RedirectError):
    """The caller's buffer cannot hold the answer; ``required`` is its size."""

    required: int = 0


class UnsupportedError(RedirectError):
    """The platform or the transport cannot do this."""


class RedirectPermissionError(RedirectError, PermissionError):
    """The process lacks the privilege (Linux: CAP_NET_RAW or CAP_NET_ADMIN;
    Windows: administrator rights)."""


#: What to do when SO_MARK or IP_TRANSPARENT is refused (Linux): one text for
#: the doctor and the proxy.
CAPABILITY_ADVICE = (
    "run the proxy as root, or give it CAP_NET_ADMIN (systemd: "
    "AmbientCapabilities=CAP_NET_ADMIN; or setcap cap_net_admin+ep on its interpreter)"
)


def renamed(error: RedirectError, inner: str, outer: str) -> RedirectError:
    """`error`, raised by call `inner`, as call `outer` reports it: the same
    class, errno and winerror, the message naming `outer` instead."""
    message = error.strerror or ""
    if message.startswith(f"{inner}: "):
        message = f"{outer}: {message[len(inner) + 2 :]}"
    again = type(error)(error.errno, message)
    winerror = getattr(error, "winerror", None)
    if winerror is not None:
        setattr(again, "winerror", winerror)  # noqa: B010 - Windows-only in the stubs
    return again
