"""The hot calls are plain native functions (benchmarks/bench_calls.py):
their signatures, as inspect sees them, and their argument-count errors."""

from __future__ import annotations

import inspect
import types
from collections.abc import Callable
from typing import Any

import pytest

import wfpredirect

SIGNATURES = {
    "original_destination": "(sock, /)",
    "query_redirect_records": "(sock, /)",
    "query_redirect_records_into": "(sock, buffer, /)",
    "set_redirect_records": "(sock, records, /, *, loop_mark=None, mark_mask=None)",
}


@pytest.mark.parametrize(("name", "signature"), SIGNATURES.items())
def test_hot_calls_are_native_with_their_signature(name: str, signature: str) -> None:
    function = getattr(wfpredirect, name)
    assert type(function) is types.BuiltinFunctionType
    assert function.__module__ == "wfpredirect._core"
    assert str(inspect.signature(function)) == signature


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (
            lambda: wfpredirect.original_destination(),
            "wfpredirect._core.original_destination() takes exactly one argument (0 given)",
        ),
        (
            lambda: wfpredirect.query_redirect_records(1, 2),
            "wfpredirect._core.query_redirect_records() takes exactly one argument (2 given)",
        ),
        (
            lambda: wfpredirect.original_destination(sock=1),
            "wfpredirect._core.original_destination() takes no keyword arguments",
        ),
        (
            lambda: wfpredirect.query_redirect_records_into(1),
            "query_redirect_records_into() takes exactly 2 positional arguments (1 given)",
        ),
        (
            lambda: wfpredirect.query_redirect_records_into(1, bytearray(1), 3),
            "query_redirect_records_into() takes exactly 2 positional arguments (3 given)",
        ),
        (
            lambda: wfpredirect.set_redirect_records(1),
            "set_redirect_records() takes exactly 2 positional arguments (1 given)",
        ),
        (
            lambda: wfpredirect.set_redirect_records(1, b"x", 0x40),
            "set_redirect_records() takes exactly 2 positional arguments (3 given)",
        ),
        (
            lambda: wfpredirect.set_redirect_records(1, records=b"x"),
            "set_redirect_records() takes exactly 2 positional arguments (1 given)",
        ),
        (
            lambda: wfpredirect.set_redirect_records(1, b"x", loop=0x40),
            "set_redirect_records() got an unexpected keyword argument 'loop'",
        ),
    ],
)
def test_wrong_arguments_are_a_type_error(call: Callable[[], Any], message: str) -> None:
    with pytest.raises(TypeError) as caught:
        call()
    assert str(caught.value) == message
