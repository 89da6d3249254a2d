"""Run a test body inside a fresh network namespace, against the real kernel.

The body runs in a forked child that calls unshare(CLONE_NEWNET), brings up
its own loopback, applies sysctls and loads nft rules; its return value (or
exception) comes back to the test through a pipe. Only loopback addresses
exist in there, so no traffic can leave the machine.
"""

from __future__ import annotations

import ctypes
import os
import pickle
import subprocess
import sys
import traceback
from collections.abc import Callable
from typing import Any, TypeVar

from support import require_root, require_tool, unavailable

T = TypeVar("T")

CLONE_NEWNET = 0x40000000  # linux/sched.h


def _enter_new_namespace(nft_rules: str | None, sysctls: dict[str, str]) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWNET) != 0:
        raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWNET) failed")
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    for name, value in sysctls.items():
        with open("/proc/sys/" + name.replace(".", "/"), "w") as sysctl:
            sysctl.write(value)
    if nft_rules:
        subprocess.run(["nft", "-f", "-"], input=nft_rules.encode(), check=True)


class NamespaceError(AssertionError):
    """The body failed inside the namespace; carries its traceback."""


def run_in_netns(
    body: Callable[[], T],
    *,
    nft_rules: str | None = None,
    sysctls: dict[str, str] | None = None,
) -> T:
    """Run `body` in a new network namespace and return what it returns.

    An exception raised by `body` is re-raised here (its traceback text is
    attached). Needs root, unshare(2), ip and nft.
    """
    require_root()
    require_tool("ip")
    if nft_rules:
        require_tool("nft")
    read_end, write_end = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        status = 0
        try:
            os.close(read_end)
            try:
                _enter_new_namespace(nft_rules, sysctls or {})
                outcome: tuple[str, Any] = ("ok", body())
            except BaseException as error:  # noqa: BLE001 - everything goes back to the test
                outcome = ("error", (error, traceback.format_exc()))
            try:
                payload = pickle.dumps(outcome)
            except Exception:  # noqa: BLE001 - an unpicklable exception
                payload = pickle.dumps(("error", (None, traceback.format_exc())))
            with os.fdopen(write_end, "wb") as pipe:
                pipe.write(payload)
        except BaseException:  # noqa: BLE001
            status = 1
        finally:
            os._exit(status)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        payload = pipe.read()
    _, wait_status = os.waitpid(pid, 0)
    if not payload:
        raise NamespaceError(f"the namespace child died (wait status {wait_status})")
    kind, value = pickle.loads(payload)
    if kind == "ok":
        return value  # type: ignore[no-any-return]
    error, text = value
    if isinstance(error, OSError) and error.errno == 1 and "unshare" in str(error):
        unavailable(f"cannot create a network namespace: {error}")
    if error is None:
        raise NamespaceError(text)
    raise error from NamespaceError(text)
