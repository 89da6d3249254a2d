"""libnftables through ctypes: one context, kept open for as long as its
owner wants the tables it created.

A table created with ``flags owner`` belongs to the netlink socket that
created it, and the kernel removes it when that socket closes (kernel 5.12,
nft 1.0.1). libnftables keeps one such socket per context from
``nft_ctx_new`` to ``nft_ctx_free``: holding the context is holding the
tables. Running ``nft`` in a subprocess cannot do that, as its socket closes
when it exits. The library is loaded at run time, so the package imports
without it.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import os
import sys
import threading
import weakref
from typing import Any

from ._errors import RedirectError, RedirectPermissionError, UnsupportedError

LIBRARY = "libnftables.so.1"
#: The Debian and Ubuntu package that ships LIBRARY.
LIBRARY_PACKAGE = "libnftables1"
NFT_CTX_DEFAULT = 0  # nftables/libnftables.h
NFT_CTX_OUTPUT_JSON = 1 << 4  # nftables/libnftables.h, enum nft_output_flags

_library: ctypes.CDLL | None = None
_library_lock = threading.Lock()


def _declare(library: ctypes.CDLL) -> None:
    context = ctypes.c_void_p
    for name, restype, argtypes in (
        ("nft_ctx_new", context, [ctypes.c_uint32]),
        ("nft_ctx_free", None, [context]),
        ("nft_ctx_buffer_output", ctypes.c_int, [context]),
        ("nft_ctx_buffer_error", ctypes.c_int, [context]),
        ("nft_ctx_get_output_buffer", ctypes.c_char_p, [context]),
        ("nft_ctx_get_error_buffer", ctypes.c_char_p, [context]),
        ("nft_ctx_output_get_flags", ctypes.c_uint, [context]),
        ("nft_ctx_output_set_flags", None, [context, ctypes.c_uint]),
        ("nft_run_cmd_from_buffer", ctypes.c_int, [context, ctypes.c_char_p]),
    ):
        function = getattr(library, name)
        function.restype = restype
        function.argtypes = argtypes


def load_library() -> ctypes.CDLL:
    """libnftables, loaded once; UnsupportedError naming the package to
    install when it is missing."""
    global _library
    with _library_lock:
        if _library is None:
            try:
                library = ctypes.CDLL(LIBRARY, use_errno=True)
            except OSError as error:
                raise UnsupportedError(
                    errno.ENOENT,
                    f"a capture needs {LIBRARY} (nftables' library), which cannot be "
                    f"loaded ({error}): apt-get install {LIBRARY_PACKAGE}",
                ) from None
            _declare(library)
            _library = library
        return _library


def _error_class(code: int) -> type[RedirectError]:
    return RedirectPermissionError if code in (errno.EPERM, errno.EACCES) else RedirectError


# The open contexts: a forked child closes its copies of their sockets.
_open: weakref.WeakSet[Nftables] = weakref.WeakSet()


class Nftables:
    """One libnftables context: its netlink socket lives until close()."""

    def __init__(self) -> None:
        self._library = load_library()
        # The context's netlink socket: libnftables opens it in nft_ctx_new
        # or (1.0.6) at the first command; found once that has run.
        self._sockets_before = _socket_descriptors()
        context = self._library.nft_ctx_new(NFT_CTX_DEFAULT)
        if not context:
            raise RedirectError(errno.ENOMEM, "nft_ctx_new: cannot create a context")
        self._context: int | None = context
        self._descriptors: set[int] = set()
        _open.add(self)
        self._library.nft_ctx_buffer_output(context)
        self._library.nft_ctx_buffer_error(context)

    def run(self, commands: str) -> str:
        """Run nft `commands` (one transaction); their output. RedirectError
        with nft's message (and the system's errno when it set one) otherwise."""
        if self._context is None:
            raise ValueError("the nftables context is closed")
        ctypes.set_errno(0)
        status = self._library.nft_run_cmd_from_buffer(self._context, commands.encode())
        code = ctypes.get_errno()
        if not self._descriptors:
            self._descriptors = _socket_descriptors() - self._sockets_before
        if status != 0:
            message = (self._library.nft_ctx_get_error_buffer(self._context) or b"").decode(
                "utf-8", "replace"
            )
            first = message.strip().splitlines()[0] if message.strip() else "failed"
            code = code or errno.EINVAL
            raise _error_class(code)(code, f"nft_run_cmd_from_buffer: {first}")
        output = self._library.nft_ctx_get_output_buffer(self._context) or b""
        return str(output.decode("utf-8", "replace"))

    def run_json(self, command: str) -> Any:
        """A listing command's answer in nft's JSON form (``nft -j``). Not
        for tables: nft 1.0.6 writes garbage in their "flags" field."""
        assert self._context is not None
        flags = self._library.nft_ctx_output_get_flags(self._context)
        self._library.nft_ctx_output_set_flags(self._context, flags | NFT_CTX_OUTPUT_JSON)
        try:
            return json.loads(self.run(command) or "{}")
        finally:
            self._library.nft_ctx_output_set_flags(self._context, flags)

    def close(self) -> None:
        """Free the context: the kernel removes the tables its socket owns."""
        context, self._context = self._context, None
        if context is not None:
            self._library.nft_ctx_free(context)

    def _forget_in_child(self) -> None:
        """In a forked child: close this copy of the socket and never use
        the context (the parent owns the tables; a child keeping the socket
        open would keep them after the parent is killed)."""
        if self._context is not None:
            self._context = None
            for descriptor in self._descriptors:
                with contextlib.suppress(OSError):
                    os.close(descriptor)

    @property
    def closed(self) -> bool:
        return self._context is None


def _socket_descriptors() -> set[int]:
    """This process's open netlink sockets (to find the one a new context
    opens: libnftables does not expose it). /proc/net/netlink lists the
    inode of every netlink socket in this namespace."""
    with open("/proc/net/netlink") as table:
        rows = [line.split() for line in table.readlines()[1:]]
    inodes = {f"socket:[{row[-1]}]" for row in rows if row}
    found = set()
    for name in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{name}")
        except OSError:
            continue
        if target in inodes:
            found.add(int(name))
    return found


def _after_fork_in_child() -> None:
    for nftables in list(_open):
        nftables._forget_in_child()


if sys.platform != "win32":
    os.register_at_fork(after_in_child=_after_fork_in_child)
