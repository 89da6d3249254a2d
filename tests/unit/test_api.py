"""The public names, constants and value types."""

from __future__ import annotations

import pickle

import wfpredirect
from wfpredirect import (
    BufferTooSmallError,
    NotRedirectedError,
    RedirectError,
    RedirectPermissionError,
    RedirectRecords,
    UnsupportedError,
)


def test_backend_on_linux() -> None:
    assert wfpredirect.BACKEND == "netfilter"


def test_windows_constants_have_their_windows_values() -> None:
    assert wfpredirect.SIO_QUERY_WFP_CONNECTION_REDIRECT_RECORDS == 0x980000DC
    assert wfpredirect.SIO_QUERY_WFP_CONNECTION_REDIRECT_CONTEXT == 0x980000DD
    assert wfpredirect.SIO_SET_WFP_CONNECTION_REDIRECT_RECORDS == 0x980000DE
    assert wfpredirect.IP_WFP_REDIRECT_RECORDS == 60
    assert wfpredirect.IP_WFP_REDIRECT_CONTEXT == 70


def test_so_original_dst_is_the_linux_value() -> None:
    assert wfpredirect.SO_ORIGINAL_DST == 80


def test_every_exported_name_exists() -> None:
    missing = [name for name in wfpredirect.__all__ if not hasattr(wfpredirect, name)]
    assert missing == []


def test_error_hierarchy() -> None:
    assert issubclass(RedirectError, OSError)
    for cls in (NotRedirectedError, BufferTooSmallError, UnsupportedError, RedirectPermissionError):
        assert issubclass(cls, RedirectError)
    assert issubclass(RedirectPermissionError, PermissionError)
    error = NotRedirectedError(2, "x")
    assert (error.errno, error.strerror) == (2, "x")


def test_redirect_records_is_an_immutable_bytes_value() -> None:
    records = RedirectRecords(b"\x01\x02\x03")
    assert isinstance(records, bytes)
    assert bytes(records) == b"\x01\x02\x03"
    assert len(records) == 3
    assert records == b"\x01\x02\x03"
    assert hash(records) == hash(b"\x01\x02\x03")
    assert memoryview(records).readonly
    assert repr(records) == "RedirectRecords(b'\\x01\\x02\\x03')"
    assert pickle.loads(pickle.dumps(records)) == records
    assert not hasattr(records, "__dict__")
