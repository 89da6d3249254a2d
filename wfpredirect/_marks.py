"""The netfilter marks: defaults, environment overrides, validation.

Read once at import. An invalid setting does not break ``import
wfpredirect``: every netfilter call then raises ValueError naming the
variable (and ``python -m wfpredirect doctor`` reports it).
"""

from __future__ import annotations

import os

from . import _core

#: Default loop mark: set on every upstream connection so that the nft rule
#: ``meta mark & 0x40 == 0x40 return`` lets it pass instead of redirecting it
#: back into the proxy.
DEFAULT_LOOP_MARK = 0x40
#: Default mark mask: the bits of an inbound connection's mark that travel in
#: its records (four bits: a chain of up to four proxies, each with its own
#: loop mark). It leaves out bit 0x1, the usual TPROXY routing mark, and the
#: bits kube-proxy (0x4000, 0x8000) uses.
DEFAULT_MARK_MASK = 0xF0

LOOP_MARK_VARIABLE = "WFPREDIRECT_LOOP_MARK"
MARK_MASK_VARIABLE = "WFPREDIRECT_MARK_MASK"

_MARK_LIMIT = 0xFFFFFFFF


def parse_mark(variable: str, default: int) -> tuple[int, str]:
    """The mark set by environment `variable` (decimal or 0x-hex), or
    `default` when unset; with the reason it cannot be used, or ""."""
    text = os.environ.get(variable)
    if text is None or text.strip() == "":
        return default, ""
    stripped = text.strip()
    try:
        value = int(stripped, 16) if stripped.lower().startswith("0x") else int(stripped, 10)
    except ValueError:
        return default, f"{variable}={text!r} is not a decimal or 0x-hex number"
    if not 0 <= value <= _MARK_LIMIT:
        return default, f"{variable}={text!r} is outside 0..0xffffffff"
    return value, ""


LOOP_MARK, LOOP_MARK_ERROR = parse_mark(LOOP_MARK_VARIABLE, DEFAULT_LOOP_MARK)
MARK_MASK, MARK_MASK_ERROR = parse_mark(MARK_MASK_VARIABLE, DEFAULT_MARK_MASK)
_core._configure_marks(LOOP_MARK, MARK_MASK, LOOP_MARK_ERROR, MARK_MASK_ERROR)


def marks_problem(
    loop_mark: int | None = None,
    mark_mask: int | None = None,
    *,
    loop_name: str = "--loop-mark",
    mask_name: str = "--mark-mask",
) -> str:
    """Why the configured marks, with `loop_mark` / `mark_mask` overriding
    them when given (and named `loop_name` / `mask_name`), cannot work; ""
    when they can: the native calls' own rule (csrc/python/marks.cpp)."""
    if LOOP_MARK_ERROR or MARK_MASK_ERROR:
        return LOOP_MARK_ERROR or MARK_MASK_ERROR
    if loop_mark is None:
        loop_mark, loop_name = LOOP_MARK, f"{LOOP_MARK_VARIABLE} (LOOP_MARK)"
    if mark_mask is None:
        mark_mask, mask_name = MARK_MASK, f"{MARK_MASK_VARIABLE} (MARK_MASK)"
    return _core._marks_problem(loop_mark, loop_name, mark_mask, mask_name)
