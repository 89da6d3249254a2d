"""The public names, constants and value types."""

from __future__ import annotations

import pickle
import sys

import wfpredirect
from wfpredirect import (
    BufferTooSmallError,
    NotRedirectedError,
    RedirectError,
    RedirectPermissionError,
    RedirectRecords,
    UnsupportedError,
)

EXPECTED_BACKEND = {"linux": "netfilter", "win32": "winsock"}.get(sys.platform, "unsupported")
EXPECTED_SO_ORIGINAL_DST = {"linux": 80, "win32": 0x300F}.get(sys.platform)


def test_backend_of_this_platform() -> None:
    assert wfpredirect.BACKEND == EXPECTED_BACKEND


def test_windows_constants_have_their_windows_values() -> None:
    assert wfpredirect.SIO_QUERY_WFP_CONNECTION_REDIRECT_RECORDS == 0x980000DC
    assert wfpredirect.SIO_QUERY_WFP_CONNECTION_REDIRECT_CONTEXT == 0x980000DD
    assert wfpredirect.SIO_SET_WFP_CONNECTION_REDIRECT_RECORDS == 0x980000DE
    assert wfpredirect.IP_WFP_REDIRECT_RECORDS == 60
    assert wfpredirect.IP_WFP_REDIRECT_CONTEXT == 70


def test_so_original_dst_is_the_platform_value() -> None:
    assert getattr(wfpredirect, "SO_ORIGINAL_DST", None) == EXPECTED_SO_ORIGINAL_DST
    assert ("SO_ORIGINAL_DST" in wfpredirect.__all__) == (EXPECTED_SO_ORIGINAL_DST is not None)


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


def test_redirect_info_is_a_named_tuple_of_three_fields() -> None:
    from wfpredirect import RedirectInfo
    from wfpredirect.aio import RedirectInfo as aio_redirect_info

    info = RedirectInfo(RedirectRecords(b"r"), b"c", ("127.0.0.2", 8080))
    assert RedirectInfo._fields == ("records", "context", "original_destination")
    assert tuple(info) == (b"r", b"c", ("127.0.0.2", 8080))
    assert aio_redirect_info is RedirectInfo
