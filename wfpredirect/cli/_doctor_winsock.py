"""The doctor's checks on Windows: the OS build, whether the WFP IOCTLs and
SO_ORIGINAL_DST answer on a test socket, and administrator rights. Only a
Windows runner exercises this module."""

from __future__ import annotations

import ctypes
import platform
import sys

from .._core import original_destination, query_redirect_records
from .._errors import NotRedirectedError, UnsupportedError
from ._doctor import Finding, query_failed, test_connection_error


def _build() -> Finding:
    return Finding("Windows", f"{platform.platform()} (build {platform.version()})")


def _records_query() -> Finding:
    name = "WFP redirect IOCTLs"
    error = test_connection_error(query_redirect_records)
    if error is None:
        return Finding(name, "answer, but report records for a plain loopback connection")
    if isinstance(error, NotRedirectedError):
        return Finding(
            name,
            f"answer (a test connection: not redirected, winerror "
            f"{getattr(error, 'winerror', None)})",
        )
    if isinstance(error, UnsupportedError):
        return Finding(
            name,
            f"not supported: {error}",
            problem="this transport does not support the WFP IOCTLs "
            "(WSAEOPNOTSUPP): a layered service provider in the way, or Wine",
            what_to_do="run on Windows 8.1 / Server 2012 R2 or later without "
            "layered providers (netsh winsock show catalog)",
        )
    return query_failed(name, error)


def _original_destination() -> Finding:
    error = test_connection_error(original_destination)
    value = (
        "answers"
        if error is None
        else "answers, or falls back to the redirect context"
        if isinstance(error, NotRedirectedError)
        else f"not available ({error}): original destinations come from "
        "a WFPSampler-layout redirect context"
    )
    return Finding("SO_ORIGINAL_DST", value)


def _administrator() -> Finding:
    if sys.platform == "win32":  # for the type checker: windll is Windows-only
        if ctypes.windll.shell32.IsUserAnAdmin():
            return Finding("administrator", "yes")
    return Finding(
        "administrator",
        "no: setting records may raise RedirectPermissionError "
        "(winerror 10013) where the callout driver requires it",
    )


def checks() -> list[Finding]:
    return [
        _build(),
        _records_query(),
        _original_destination(),
        _administrator(),
        Finding("marks", "not used on Windows (the callout driver reads the records)"),
        Finding(
            "redirect",
            "needs a WFP callout driver that redirects connections to the "
            "proxy (for example Microsoft's WFPSampler)",
        ),
    ]
