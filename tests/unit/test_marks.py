"""LOOP_MARK and MARK_MASK from the environment: defaults, overrides, and
invalid settings that leave the import working but fail every call."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import pytest

from support import NEUTRAL_DIRECTORY, linux_only

pytestmark = linux_only

PROBE = """
import json, socket, wfpredirect
result = {"loop": wfpredirect.LOOP_MARK, "mask": wfpredirect.MARK_MASK}
calls = {
    "query_redirect_records": lambda s: wfpredirect.query_redirect_records(s),
    "original_destination": lambda s: wfpredirect.original_destination(s),
    "query_redirect_context": lambda s: wfpredirect.query_redirect_context(s),
    "set_redirect_records": lambda s: wfpredirect.set_redirect_records(s, b"x"),
}
with socket.socket() as sock:
    for name, call in calls.items():
        try:
            call(sock)
            result[name] = None
        except Exception as error:
            result[name] = [type(error).__name__, str(error)]
print(json.dumps(result))
"""


def probe(**environment: str) -> dict[str, object]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WFPREDIRECT_")}
    env.update(environment)
    completed = subprocess.run(
        [sys.executable, "-c", PROBE],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        cwd=NEUTRAL_DIRECTORY,
    )
    return json.loads(completed.stdout)  # type: ignore[no-any-return]


def test_defaults() -> None:
    result = probe()
    assert (result["loop"], result["mask"]) == (0x40, 0xF0)
    # A valid configuration reaches the socket: an unconnected socket is
    # not redirected, and b"x" is not a record.
    assert result["query_redirect_records"][0] == "NotRedirectedError"  # type: ignore[index]
    assert result["set_redirect_records"] == [
        "ValueError",
        "set_redirect_records: records are too short to be a netfilter record"
        " (truncated or foreign)",
    ]


@pytest.mark.parametrize(
    ("loop", "mask", "expected"),
    [("128", "0xff00ff", (128, 0xFF00FF)), (" 0X10 ", "255", (16, 255))],
)
def test_environment_overrides(loop: str, mask: str, expected: tuple[int, int]) -> None:
    result = probe(WFPREDIRECT_LOOP_MARK=loop, WFPREDIRECT_MARK_MASK=mask)
    assert (result["loop"], result["mask"]) == expected
    assert result["query_redirect_records"][0] == "NotRedirectedError"  # type: ignore[index]


@pytest.mark.parametrize(
    ("environment", "problem"),
    [
        (
            {"WFPREDIRECT_LOOP_MARK": "abc"},
            "WFPREDIRECT_LOOP_MARK='abc' is not a decimal or 0x-hex number",
        ),
        (
            {"WFPREDIRECT_MARK_MASK": "0x1ffffffff"},
            "WFPREDIRECT_MARK_MASK='0x1ffffffff' is outside 0..0xffffffff",
        ),
        (
            {"WFPREDIRECT_LOOP_MARK": "0"},
            "WFPREDIRECT_LOOP_MARK (LOOP_MARK) is 0: the loop mark must be non-zero, or the "
            "upstream connection is redirected back into the proxy",
        ),
        (
            {"WFPREDIRECT_LOOP_MARK": "0x100"},
            "WFPREDIRECT_LOOP_MARK (LOOP_MARK) 0x100 is not inside WFPREDIRECT_MARK_MASK "
            "(MARK_MASK) 0xf0: the loop mark must only use bits of the mark mask",
        ),
    ],
)
def test_invalid_setting_fails_every_call_not_the_import(
    environment: dict[str, str], problem: str
) -> None:
    result = probe(**environment)
    for name in (
        "query_redirect_records",
        "original_destination",
        "query_redirect_context",
        "set_redirect_records",
    ):
        assert result[name] == ["ValueError", f"{name}: {problem}"]


# The one grammar of a mark (csrc/core/netfilter/marks.hpp), as the
# variables and the command line read it: text -> the mark, or the reason.
NOT_A_NUMBER = "is not a decimal or 0x-hex number"
OUTSIDE = "is outside 0..0xffffffff"
GRAMMAR = [
    ("64", 64),
    (" 0x40\t", 0x40),
    ("0X1f", 0x1F),
    ("010", 10),
    ("0", 0),
    ("4294967295", 0xFFFFFFFF),
    ("0xffffffff", 0xFFFFFFFF),
    ("0b1000000", NOT_A_NUMBER),
    ("0o100", NOT_A_NUMBER),
    ("1_000", NOT_A_NUMBER),
    ("+64", NOT_A_NUMBER),
    ("-1", NOT_A_NUMBER),
    ("0x", NOT_A_NUMBER),
    ("6 4", NOT_A_NUMBER),
    ("0x1g", NOT_A_NUMBER),
    ("4294967296", OUTSIDE),
    ("0x100000000", OUTSIDE),
    ("99999999999999999999999", OUTSIDE),
]


@pytest.mark.parametrize(("text", "expected"), GRAMMAR)
def test_one_grammar_for_variables_and_flags(text: str, expected: int | str) -> None:
    """The same text means the same mark, or is refused for the same
    reason, in WFPREDIRECT_LOOP_MARK, WFPREDIRECT_MARK_MASK and --loop-mark."""
    from wfpredirect.cli._main import mark_number

    result = probe(WFPREDIRECT_LOOP_MARK=text, WFPREDIRECT_MARK_MASK=text)
    try:
        flag: int | str = mark_number(text)
    except argparse.ArgumentTypeError as error:
        flag = str(error)
    if isinstance(expected, int):
        assert (result["loop"], result["mask"], flag) == (expected, expected, expected)
    else:
        problem = f"{text!r} {expected}"
        assert flag == problem
        assert result["query_redirect_records"] == [
            "ValueError",
            f"query_redirect_records: WFPREDIRECT_LOOP_MARK={problem}",
        ]


RESOLVE = """
import json, socket, wfpredirect
from wfpredirect._marks import resolve_marks
record = b"WFPR\\x01\\x04\\x00\\x00" + bytes(4) + b"\\x1f\\x90" + bytes([127, 0, 0, 2])
rows = []
for loop, mask in json.loads(input()):
    marks = list(resolve_marks(loop, mask))
    with socket.socket() as sock:
        try:
            wfpredirect.set_redirect_records(sock, record, loop_mark=loop, mark_mask=mask)
            native = ""
        except ValueError as error:
            native = str(error).removeprefix("set_redirect_records: ")
        except OSError:
            native = ""  # past the marks (SO_MARK needs privileges)
    rows.append(marks + [native])
print(json.dumps(rows))
"""

# Environment, then (loop_mark, mark_mask) overrides -> (loop mark, mask, problem).
LOOP_SETTING = "WFPREDIRECT_LOOP_MARK (LOOP_MARK)"
MASK_SETTING = "WFPREDIRECT_MARK_MASK (MARK_MASK)"
INSIDE = "the loop mark must only use bits of the mark mask"
PRECEDENCE = [
    ({}, (None, None), (0x40, 0xF0, "")),
    ({}, (0x80, None), (0x80, 0xF0, "")),
    (
        {},
        (None, 0xF00),
        (0x40, 0xF00, f"{LOOP_SETTING} 0x40 is not inside --mark-mask 0xf00: {INSIDE}"),
    ),
    ({"WFPREDIRECT_LOOP_MARK": "0x20"}, (None, None), (0x20, 0xF0, "")),
    ({"WFPREDIRECT_LOOP_MARK": "0x20"}, (0x10, None), (0x10, 0xF0, "")),
    ({"WFPREDIRECT_LOOP_MARK": "0x200"}, (None, 0x300), (0x200, 0x300, "")),
    (
        {"WFPREDIRECT_LOOP_MARK": "0x200"},
        (None, None),
        (0x200, 0xF0, f"{LOOP_SETTING} 0x200 is not inside {MASK_SETTING} 0xf0: {INSIDE}"),
    ),
    # A variable that cannot be read counts only where its value is used:
    # a keyword or flag that replaces it makes the marks valid.
    (
        {"WFPREDIRECT_LOOP_MARK": "bogus"},
        (None, None),
        (0x40, 0xF0, f"WFPREDIRECT_LOOP_MARK='bogus' {NOT_A_NUMBER}"),
    ),
    ({"WFPREDIRECT_LOOP_MARK": "bogus"}, (0x40, None), (0x40, 0xF0, "")),
    (
        {"WFPREDIRECT_MARK_MASK": "bogus"},
        (0x40, None),
        (0x40, 0xF0, f"WFPREDIRECT_MARK_MASK='bogus' {NOT_A_NUMBER}"),
    ),
    ({"WFPREDIRECT_MARK_MASK": "bogus"}, (None, 0xF0), (0x40, 0xF0, "")),
    ({"WFPREDIRECT_LOOP_MARK": "0"}, (0x40, 0x40), (0x40, 0x40, "")),
    (
        {},
        (0, None),
        (
            0,
            0xF0,
            "--loop-mark is 0: the loop mark must be non-zero, or the "
            "upstream connection is redirected back into the proxy",
        ),
    ),
]


@pytest.mark.parametrize("environment", sorted({json.dumps(row[0]) for row in PRECEDENCE}), ids=str)
def test_keyword_over_variable_over_default(environment: str) -> None:
    """What the proxy's flags get (resolve_marks), and what the native
    call with the same keywords says, agree row by row."""
    rows = [row for row in PRECEDENCE if json.dumps(row[0]) == environment]
    env = {k: v for k, v in os.environ.items() if not k.startswith("WFPREDIRECT_")}
    env.update(json.loads(environment))
    completed = subprocess.run(
        [sys.executable, "-c", RESOLVE],
        input=json.dumps([list(row[1]) for row in rows]),
        env=env,
        capture_output=True,
        text=True,
        check=True,
        cwd=NEUTRAL_DIRECTORY,
    )
    answers = json.loads(completed.stdout)
    expected = []
    for _, _, (loop, mask, problem) in rows:
        native = problem.replace("--loop-mark", "loop_mark").replace("--mark-mask", "mark_mask")
        expected.append([loop, mask, problem, native])
    assert answers == expected
