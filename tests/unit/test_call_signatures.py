"""Every native function is a plain CPython function (the hot calls for
speed, benchmarks/bench_calls.py; the others for one rule): positional-only
arguments, keyword-only options, a signature inspect and help() see, and
CPython's own argument errors."""

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
    "query_redirect_context": "(sock, /)",
    "query_redirect_context_into": "(sock, buffer, /)",
    "decode_wfpsampler_context": "(context, /)",
    "query_redirect_info": "(sock, listening_addresses=())",
    "enable_datagram_records": "(sock, /)",
    "recvmsg_redirect": "(sock, bufsize, /)",
    "recvmsg_redirect_into": "(sock, buffer, /)",
    "sendmsg_redirect": (
        "(sock, data, address, records=None, /, *, loop_mark=None, mark_mask=None)"
    ),
}


def test_every_public_function_has_a_signature_and_a_plain_help() -> None:
    import pydoc

    functions = [
        name
        for name in wfpredirect.__all__
        if callable(getattr(wfpredirect, name)) and not isinstance(getattr(wfpredirect, name), type)
    ]
    natives = sorted(
        name for name in functions if type(getattr(wfpredirect, name)) is types.BuiltinFunctionType
    )
    assert natives == sorted(SIGNATURES)
    for name in functions:
        inspect.signature(getattr(wfpredirect, name))
        text = pydoc.render_doc(getattr(wfpredirect, name), renderer=pydoc.plaintext)
        assert "pybind11" not in text, name


@pytest.mark.parametrize(("name", "signature"), SIGNATURES.items())
def test_native_functions_have_their_signature(name: str, signature: str) -> None:
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
        (
            lambda: wfpredirect.query_redirect_context(sock=1),
            "wfpredirect._core.query_redirect_context() takes no keyword arguments",
        ),
        (
            lambda: wfpredirect.recvmsg_redirect(1),
            "recvmsg_redirect() takes exactly 2 positional arguments (1 given)",
        ),
        (
            lambda: wfpredirect.sendmsg_redirect(1, b"x"),
            "sendmsg_redirect() takes at least 3 positional arguments (2 given)",
        ),
        (
            lambda: wfpredirect.sendmsg_redirect(1, b"x", ("127.0.0.1", 9), None, 0x40),
            "sendmsg_redirect() takes at most 4 positional arguments (5 given)",
        ),
        (
            lambda: wfpredirect.sendmsg_redirect(1, b"x", ("127.0.0.1", 9), mark=1),
            "sendmsg_redirect() got an unexpected keyword argument 'mark'",
        ),
    ],
)
def test_wrong_arguments_are_a_type_error(call: Callable[[], Any], message: str) -> None:
    with pytest.raises(TypeError) as caught:
        call()
    assert str(caught.value) == message


# The stub's private aliases, as help() spells them.
ALIASES = {
    "_Socket": "socket | int",
    "_WritableBuffer": "bytearray | memoryview",
    "_ReadableBuffer": "bytes | bytearray | memoryview",
    "_Address": "tuple[str, int] | tuple[str, int, int, int]",
}


def typed_signatures() -> dict[str, str]:
    """Each native function's signature with its types, from _core.pyi as
    installed beside the module (aliases spelled out)."""
    import ast
    import re
    from pathlib import Path

    stub = Path(wfpredirect._core.__file__).with_name("_core.pyi")
    tree = ast.parse(stub.read_text(encoding="utf-8"))
    signatures = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef) and node.name in SIGNATURES:
            text = f"{node.name}({ast.unparse(node.args)}) -> {ast.unparse(node.returns)}"
            for alias, spelled in ALIASES.items():
                text = re.sub(rf"\b{alias}\b", spelled, text)
            # ast.unparse writes an annotated default without spaces (every
            # parameter of the stub is annotated).
            signatures[node.name] = text.replace("=", " = ")
    return signatures


@pytest.mark.parametrize("name", sorted(SIGNATURES))
def test_help_shows_the_types_of_the_stub(name: str) -> None:
    """help() has the stub's types (inspect cannot read them from a text
    signature): the docstring's first line is the typed signature."""
    function = getattr(wfpredirect, name)
    assert function.__doc__.splitlines()[0] == typed_signatures()[name]
