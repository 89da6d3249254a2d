"""What ``wfpredirect proxy`` logs, and the patterns that read it back: each
kind of line is written once, as a template, and both its text and its
pattern come from it, so that the demo, the tests and the benchmarks read
what the proxy writes.

``RELAYED.line(client=..., ...)`` makes a message, which ``say`` logs
through the ``logging`` module (logger ``wfpredirect.proxy``) at the kind's
level; the library's own records (logger ``wfpredirect``) go to the same
handler. Two formats (``configure``):

- ``text``: ``TIME LEVEL MESSAGE``, ``TIME`` in UTC as
  ``2026-12-02T09:15:02.123Z``;
- ``json``: one JSON object a line, with ``time``, ``level``, ``event``
  (the kind's name, or ``"library"``), ``message`` and the kind's fields
  (``EVENTS`` lists them; docs/command-line.md documents them).

``RELAYED.pattern`` matches a whole text line (``fullmatch``), with or
without its ``TIME LEVEL`` prefix, with a named group per field;
``message(line)`` is a text line without that prefix.
"""

from __future__ import annotations

import json
import logging
import math
import re
import string
import sys
import time
from typing import Any, TextIO

# What each field looks like in a line, and its type in a JSON line.
_FIELDS: dict[str, tuple[str, type]] = {
    "client": (r"\S+", str),
    "target": (r"\S+", str),
    "host": (r"\S+", str),
    "port": (r"\d+", int),
    "up": (r"\d+", int),
    "down": (r"\d+", int),
    "seconds": (r"\d+\.\d+", float),
    "open": (r"\d+", int),
    "relayed": (r"\d+", int),
    "refused": (r"\d+", int),
    "failed": (r"\d+", int),
    "rate": (r"\d+", float),
    "grace": (r"\S+", float),
    "outcome": (r".+", str),
    "reason": (r".+", str),
    "error": (r".+", str),
    "suppressed": (r"\d+", int),
    "limit": (r"\d+", int),
    "number": (r"\d+", int),
    "pid": (r"\d+", int),
    "ended": (r"killed by SIG[A-Z0-9]+(?: \(core dumped\))?|exited with status \d+", str),
    "then": (r".+", str),
    "delay": (r"\S+", float),
    "connections": (r"\d+", int),
    "flows": (r"\d+", int),
    "pipes": (r"\d+", int),
    "capabilities": (r"\S+", str),
    "user": (r"\S+", str),
    "listener": (r"\S+", str),
    "targets": (r"\S+", str),
    "table": (r"\S+", str),
    "command": (r".+", str),
}

#: The levels --log-level accepts, by name.
LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING}
FORMATS = ("text", "json")

#: A text line's prefix: the time in UTC to the millisecond, and the level.
_PREFIX = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (?:DEBUG|INFO|WARNING|ERROR|CRITICAL) "
_PREFIXED = re.compile(f"{_PREFIX}(?P<message>.*)", re.DOTALL)


def message(line: str) -> str:
    """`line` (a text log line) without its time and level, else unchanged."""
    match = _PREFIXED.fullmatch(line)
    return match["message"] if match else line


class LogText(str):
    """A message made by a LogLine: the text, with its kind and fields."""

    kind: LogLine
    fields: dict[str, Any]


class LogLine:
    """One kind of line: its event name, its level, and a ``str.format``
    template whose fields are named in _FIELDS."""

    def __init__(self, event: str, template: str, level: int = logging.INFO) -> None:
        self.event = event
        self.template = template
        self.level = level
        parts = [f"(?:{_PREFIX})?"]
        self.fields: list[str] = []
        for text, field, _, _ in string.Formatter().parse(template):
            parts.append(re.escape(text))
            if field is not None:
                parts.append(f"(?P<{field}>{_FIELDS[field][0]})")
                self.fields.append(field)
        self.pattern = re.compile("".join(parts))
        EVENTS[event] = self

    def line(self, **fields: Any) -> LogText:
        text = LogText(self.template.format(**fields))
        text.kind = self
        text.fields = fields  # typed by typed_fields, for a JSON line only
        return text

    def typed_fields(self, fields: dict[str, Any]) -> dict[str, Any]:
        """`fields` as a JSON line has them: each of this kind's, its type."""
        return {name: _FIELDS[name][1](fields[name]) for name in self.fields}


#: Every kind of line, by event name.
EVENTS: dict[str, LogLine] = {}

_TOTALS = (
    "{open} open, {relayed} relayed, {refused} refused, {failed} failed, "
    "{up} bytes up, {down} bytes down"
)

LISTENING = LogLine("listening", "listening on {host} port {port}")
LISTENING_UDP = LogLine("listening_udp", "listening for udp on {host} port {port}")
#: --capture, at start, after the listening lines: what the proxy captures
#: and the nftables table that holds it (wfpredirect.Capture).
CAPTURING = LogLine("capturing", "capturing {targets} in nftables table {table}")
#: --capture without `flags owner` (before Linux 5.12 or nftables 1.0.1).
CAPTURE_NOT_OWNED = LogLine(
    "capture_not_owned",
    "nftables table {table} is deleted when the proxy stops, but this system lacks "
    "'flags owner': after a kill -9, delete it with: {command}",
    logging.WARNING,
)
#: --capture: removing the table or the UDP routing rule failed at stop.
CAPTURE_NOT_REMOVED = LogLine(
    "capture_not_removed", "nftables table {table} not removed: {error}", logging.WARNING
)
#: At start, after the listening lines: the descriptor limit (raised to the
#: hard limit), the caps derived from it or given, and the native relay's
#: pipe pool (_capacity).
CAPACITY = LogLine(
    "capacity",
    "descriptors: {limit}; up to {connections} connections and {flows} udp flows; "
    "a pool of {pipes} pipes",
)
#: Linux, once the sockets are bound: the capabilities kept (comma-separated),
#: and the user the proxy runs as (_privileges).
PRIVILEGES = LogLine(
    "privileges", "privileges: kept {capabilities}, dropped every other capability; user {user}"
)
#: A relayed connection, when it ends: `outcome` is "closed", "cut at
#: shutdown", "idle timeout", "timed out ..." or "ended by ...".
RELAYED = LogLine(
    "relayed",
    "{client} -> {target}: {up} bytes up, {down} bytes down, {seconds:.3f} s, {outcome}",
)
REFUSED = LogLine(
    "refused",
    "refused {client}: not redirected (addressed to the proxy itself)",
    logging.WARNING,
)
FAILED = LogLine(
    "failed", "failed {client} -> {target}: cannot connect upstream: {reason}", logging.WARNING
)
#: A client that reset before its redirect state was read: nothing is
#: wrong with the proxy or its rules (a port scan, a client that gave up).
GONE = LogLine("gone", "{client} went away before its redirect state was read", logging.DEBUG)
#: Accepting paused: the proxy holds --max-connections connections, and a
#: client waits in the listen backlog until one ends (said through THROTTLE).
CONNECTION_CAP = LogLine(
    "connection_cap",
    "at the connection cap ({limit}): accepting paused ({suppressed} more suppressed)",
    logging.WARNING,
)
#: A relayed UDP flow, when it ends.
UDP_FLOW = LogLine(
    "udp_flow", "udp {client} -> {target}: {up} bytes up, {down} bytes down, {seconds:.3f} s"
)
UDP_REFUSED = LogLine("udp_refused", "refused udp {client}: not redirected", logging.WARNING)
#: Said through THROTTLE: under descriptor exhaustion (EMFILE) it can come
#: thousands of times a second.
UDP_ERROR = LogLine("udp_error", "udp error: {error} ({suppressed} more suppressed)", logging.ERROR)
#: A datagram that would start a UDP flow beyond --max-udp-flows, dropped
#: (counted as refused); said through THROTTLE.
UDP_FLOW_CAP = LogLine(
    "udp_flow_cap",
    "at the udp flow cap ({limit}): new flows dropped ({suppressed} more suppressed)",
    logging.WARNING,
)
#: An origin's answer that could not be sent from the origin's address: the
#: reply socket's bind failed (EADDRINUSE: a socket of the origin on this
#: host without SO_REUSEADDR). Once per origin address.
UDP_REPLY_FAILED = LogLine(
    "udp_reply_failed",
    "udp {client} -> {target}: cannot answer from that address: {error}; "
    "the origin on this host must set SO_REUSEADDR on its socket",
    logging.WARNING,
)
SUMMARY = LogLine("summary", f"summary: {_TOTALS}, {{rate:.0f}} bytes/s")
#: SIGHUP: a stop like SIGTERM's (there is no reload), said before it.
HANGUP = LogLine(
    "hangup", "SIGHUP: stopping as on SIGTERM (there is no reload: restart to change options)"
)
#: More resource lines (said through THROTTLE, at most one a second each):
#: accept() out of descriptors or memory, accepting paused for a second;
#: any other error the event loop reports (no traceback).
ACCEPT_PAUSED = LogLine(
    "accept_paused",
    "accept() on {listener}: {error}; accepting again in 1 s ({suppressed} more suppressed)",
    logging.ERROR,
)
LOOP_ERROR = LogLine(
    "loop_error", "event loop: {error} ({suppressed} more suppressed)", logging.ERROR
)
STOPPING = LogLine("stopping", "stopping: {open} open connections get {grace:g} s")
STOPPED = LogLine("stopped", f"stopped after {{seconds:.1f}} s: {_TOTALS}")
#: --workers: the parent started worker `number` (at start, or to replace one).
WORKER_STARTED = LogLine("worker_started", "worker {number} started: pid {pid}", logging.DEBUG)
#: --workers: a worker ended without being asked to, or failed while stopping:
#: how (`ended`), and what follows (`then`: its replacement's back-off, or
#: the proxy stopping).
WORKER_DIED = LogLine("worker_died", "worker {number} (pid {pid}) {ended}: {then}", logging.ERROR)
#: --workers: a replacement could not be forked; it is tried again after `delay`.
WORKER_UNSTARTED = LogLine(
    "worker_unstarted",
    "cannot start worker {number} again: {error}: next try in {delay:g} s",
    logging.ERROR,
)

#: The proxy's logger; the library's (its parent, ``wfpredirect``) shares its handler.
LOGGER = logging.getLogger("wfpredirect.proxy")


def say(text: str) -> None:
    """Log `text`, a LogLine's message (any other text is logged at INFO)."""
    if isinstance(text, LogText):
        handler = _direct
        if handler is not None and handler.direct(text):
            return
        LOGGER.log(text.kind.level, text, extra={"event": text.kind.event, "fields": text.fields})
    else:
        LOGGER.info(text)


class Throttle:
    """At most one line a second of each kind (a LogLine with a
    ``suppressed`` field): a resource running out (descriptors, the
    connection cap, the flow cap) can happen thousands of times a second,
    and one line a time would flood the log. The lines held back are
    counted, and the next line said gives their number."""

    def __init__(self, interval: float = 1.0) -> None:
        self.interval = interval
        # By kind: when its last line was said, and how many were held back since.
        self.last: dict[str, tuple[float, int]] = {}

    def say(self, kind: LogLine, **fields: Any) -> bool:
        """Say `kind`'s line with `fields`, or count it as held back: whether it was said."""
        now = time.monotonic()
        said, held = self.last.get(kind.event, (-math.inf, 0))
        if now - said < self.interval:
            self.last[kind.event] = (said, held + 1)
            return False
        self.last[kind.event] = (now, 0)
        say(kind.line(suppressed=held, **fields))
        return True


#: The proxy's one Throttle: every resource-exhaustion line goes through it.
THROTTLE = Throttle()


# The last second _utc wrote, and its text: one strftime a second.
_stamp: tuple[int, str] = (-1, "")


def _utc(created: float) -> str:
    global _stamp
    seconds, milliseconds = divmod(round(created * 1000), 1000)
    if _stamp[0] != seconds:
        _stamp = (seconds, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)))
    return f"{_stamp[1]}.{milliseconds:03d}Z"


class TextFormatter(logging.Formatter):
    """``TIME LEVEL MESSAGE``."""

    def format(self, record: logging.LogRecord) -> str:
        return self.render(record.created, record.levelname, "", record.getMessage(), {})

    def render(
        self, created: float, level: str, event: str, message: str, fields: dict[str, Any]
    ) -> str:
        return f"{_utc(created)} {level} {message}"


class JsonFormatter(TextFormatter):
    """One JSON object: time, level, event, message, and the event's fields."""

    def format(self, record: logging.LogRecord) -> str:
        return self.render(
            record.created,
            record.levelname,
            getattr(record, "event", "library"),
            record.getMessage(),
            getattr(record, "fields", {}),
        )

    def render(
        self, created: float, level: str, event: str, message: str, fields: dict[str, Any]
    ) -> str:
        entry: dict[str, Any] = {
            "time": _utc(created),
            "level": level,
            "event": event,
            "message": message,
        }
        kind = EVENTS.get(event)
        if kind is not None:
            entry.update(kind.typed_fields(fields))
        return json.dumps(entry, ensure_ascii=False)


_LIBRARY = logging.getLogger("wfpredirect")


class _Handler(logging.StreamHandler):  # type: ignore[type-arg]
    """The handler configure() installs (so that a second call replaces it).

    ``direct`` writes a LogLine's message the way logging would, without
    making a LogRecord and walking the loggers (a quarter of the proxy's
    time per connection went there), as long as the loggers are still as
    configure() left them; otherwise it declines and say() uses logging."""

    def __init__(self, stream: TextIO, formatter: TextFormatter) -> None:
        super().__init__(stream)
        self.setFormatter(formatter)
        self.configured = formatter

    def direct(self, text: LogText) -> bool:
        level = text.kind.level
        proxy = LOGGER
        library = _LIBRARY
        if (
            proxy.handlers
            or proxy.filters
            or proxy.level
            or proxy.disabled
            or not proxy.propagate
            or library.handlers != [self]
            or library.filters
            or library.disabled
            or library.propagate
            or self.filters
            or level < library.level
            or level < self.level
            or level <= logging.root.manager.disable
            or self.formatter is not self.configured
        ):
            return False
        line = self.configured.render(
            time.time(), logging.getLevelName(level), text.kind.event, text, text.fields
        )
        with self.lock:  # type: ignore[union-attr]
            try:
                self.stream.write(line + self.terminator)
                self.stream.flush()
            except Exception:  # noqa: BLE001 - logging's own rule: never raise
                return False  # logging writes it again and reports the error
        return True


#: The handler say() writes to directly, while the loggers are as configure left them.
_direct: _Handler | None = None


def configure(level: int = logging.INFO, form: str = "text", stream: TextIO | None = None) -> None:
    """Send the proxy's lines and the library's records at `level` and above
    to `stream` (standard output by default), one line each, flushed, in
    format `form` ("text" or "json")."""
    global _direct
    handler = _Handler(
        sys.stdout if stream is None else stream,
        JsonFormatter() if form == "json" else TextFormatter(),
    )
    library = _LIBRARY
    for old in [old for old in library.handlers if isinstance(old, _Handler)]:
        library.removeHandler(old)
    library.addHandler(handler)
    library.setLevel(level)
    library.propagate = False
    _direct = handler
