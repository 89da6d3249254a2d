"""The lines ``wfpredirect proxy`` prints, and the patterns that read them
back: each line is written once, as a template, and both its text and its
pattern come from it, so that the demo, the tests and the benchmarks read
what the proxy writes.

``RELAYED.line(client=..., ...)`` makes a line; ``RELAYED.pattern`` matches
a whole line (``fullmatch``) with a named group per field.
"""

from __future__ import annotations

import re
import string
from typing import Any

# What each field looks like in a line.
_FIELDS = {
    "client": r"\S+",
    "target": r"\S+",
    "host": r"\S+",
    "port": r"\d+",
    "up": r"\d+",
    "down": r"\d+",
    "seconds": r"\d+\.\d+",
    "open": r"\d+",
    "relayed": r"\d+",
    "refused": r"\d+",
    "failed": r"\d+",
    "rate": r"\d+",
    "grace": r"\S+",
    "outcome": r".+",
    "reason": r".+",
    "error": r".+",
}


class LogLine:
    """One kind of line: a ``str.format`` template whose fields are named in
    _FIELDS."""

    def __init__(self, template: str) -> None:
        self.template = template
        parts = []
        for text, field, _, _ in string.Formatter().parse(template):
            parts.append(re.escape(text))
            if field is not None:
                parts.append(f"(?P<{field}>{_FIELDS[field]})")
        self.pattern = re.compile("".join(parts))

    def line(self, **fields: Any) -> str:
        return self.template.format(**fields)


_TOTALS = (
    "{open} open, {relayed} relayed, {refused} refused, {failed} failed, "
    "{up} bytes up, {down} bytes down"
)

LISTENING = LogLine("listening on {host} port {port}")
LISTENING_UDP = LogLine("listening for udp on {host} port {port}")
#: A relayed connection, when it ends: `outcome` is "closed", "cut at
#: shutdown", "timed out ..." or "ended by ...".
RELAYED = LogLine(
    "{client} -> {target}: {up} bytes up, {down} bytes down, {seconds:.3f} s, {outcome}"
)
REFUSED = LogLine("refused {client}: not redirected (addressed to the proxy itself)")
FAILED = LogLine("failed {client} -> {target}: cannot connect upstream: {reason}")
#: A relayed UDP flow, when it ends.
UDP_FLOW = LogLine("udp {client} -> {target}: {up} bytes up, {down} bytes down, {seconds:.3f} s")
UDP_REFUSED = LogLine("refused udp {client}: not redirected")
UDP_ERROR = LogLine("udp error: {error}")
SUMMARY = LogLine(f"summary: {_TOTALS}, {{rate:.0f}} bytes/s")
STOPPING = LogLine("stopping: {open} open connections get {grace:g} s")
STOPPED = LogLine(f"stopped after {{seconds:.1f}} s: {_TOTALS}")
