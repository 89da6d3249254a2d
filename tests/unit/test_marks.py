"""LOOP_MARK and MARK_MASK from the environment: defaults, overrides, and
invalid settings that leave the import working but fail every call."""

from __future__ import annotations

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
