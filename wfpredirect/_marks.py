"""The netfilter marks: the environment read once at import, and the rule
asked of the core (csrc/core/netfilter/marks.hpp), which alone knows the
defaults, the grammar, the precedence and the checks.

An invalid setting does not break ``import wfpredirect``: every netfilter
call then raises ValueError naming the variable (and ``python -m
wfpredirect doctor`` reports it).
"""

from __future__ import annotations

import os

from . import _core

#: Default loop mark: set on every upstream connection so that the nft rule
#: ``meta mark & 0x40 == 0x40 return`` lets it pass instead of redirecting it
#: back into the proxy.
DEFAULT_LOOP_MARK: int = _core.DEFAULT_LOOP_MARK
#: Default mark mask: the bits of an inbound connection's mark that travel in
#: its records (four bits: a chain of up to four proxies, each with its own
#: loop mark). It leaves out bit 0x1, the usual TPROXY routing mark, and the
#: bits kube-proxy (0x4000, 0x8000) uses.
DEFAULT_MARK_MASK: int = _core.DEFAULT_MARK_MASK

LOOP_MARK_VARIABLE: str = _core.LOOP_MARK_VARIABLE
MARK_MASK_VARIABLE: str = _core.MARK_MASK_VARIABLE

_core._configure_marks(os.environ.get(LOOP_MARK_VARIABLE), os.environ.get(MARK_MASK_VARIABLE))
LOOP_MARK, MARK_MASK, _ = _core._resolve_marks(None, None, "", "")


def resolve_marks(
    loop_mark: int | None = None,
    mark_mask: int | None = None,
    *,
    loop_name: str = "--loop-mark",
    mask_name: str = "--mark-mask",
) -> tuple[int, int, str]:
    """The marks in effect with `loop_mark` / `mark_mask` overriding the
    variables when given (and named `loop_name` / `mask_name` in a
    problem), and why they cannot work ("" when they can): the rule every
    netfilter call applies to its keywords."""
    return _core._resolve_marks(loop_mark, mark_mask, loop_name, mask_name)


def marks_problem(
    loop_mark: int | None = None,
    mark_mask: int | None = None,
    *,
    loop_name: str = "--loop-mark",
    mask_name: str = "--mark-mask",
) -> str:
    """Why the marks in effect (see resolve_marks) cannot work; "" when they can."""
    return resolve_marks(loop_mark, mark_mask, loop_name=loop_name, mask_name=mask_name)[2]


def parse_mark(text: str) -> int:
    """A mark written as text, in the one grammar of the variables and the
    command line (decimal or 0x-hex, 0..0xffffffff); ValueError otherwise."""
    return _core._parse_mark(text)
