"""What the proxy logs: the text and JSON formats, levels, and the patterns
that read text lines back (with or without the time and level)."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from support import project_file
from wfpredirect.cli import _proxy_log as log

# 2026-12-02 09:15:02.123 UTC.
CREATED = 1796202902.123


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    """configure() writing to a buffer; the library's logger as it was, after."""
    library = logging.getLogger("wfpredirect")
    saved = (library.handlers[:], library.level, library.propagate)
    buffer = io.StringIO()
    try:
        yield buffer
    finally:
        library.handlers[:], library.level, library.propagate = saved


def relayed() -> log.LogText:
    return log.RELAYED.line(
        client="127.0.0.1:40000",
        target="[::1]:8080",
        up=10,
        down=2048,
        seconds=0.25,
        outcome="closed",
    )


def formatted(formatter: logging.Formatter, text: str, level: int = logging.INFO) -> str:
    record = logging.LogRecord("wfpredirect.proxy", level, __file__, 1, text, None, None)
    record.created = CREATED
    kind = getattr(text, "kind", None)
    if kind is not None:
        record.event = kind.event
        record.fields = text.fields  # type: ignore[attr-defined]
    return formatter.format(record)


def test_a_text_line_has_the_time_in_utc_and_the_level() -> None:
    assert formatted(log.TextFormatter(), relayed()) == (
        "2026-12-02T09:15:02.123Z INFO "
        "127.0.0.1:40000 -> [::1]:8080: 10 bytes up, 2048 bytes down, 0.250 s, closed"
    )


def test_a_json_line_has_the_event_and_its_typed_fields() -> None:
    assert json.loads(formatted(log.JsonFormatter(), relayed())) == {
        "time": "2026-12-02T09:15:02.123Z",
        "level": "INFO",
        "event": "relayed",
        "message": "127.0.0.1:40000 -> [::1]:8080: 10 bytes up, 2048 bytes down, 0.250 s, closed",
        "client": "127.0.0.1:40000",
        "target": "[::1]:8080",
        "up": 10,
        "down": 2048,
        "seconds": 0.25,
        "outcome": "closed",
    }


def test_a_library_record_in_json_is_a_library_event() -> None:
    line = formatted(log.JsonFormatter(), "closed the connection", logging.ERROR)
    assert json.loads(line) == {
        "time": "2026-12-02T09:15:02.123Z",
        "level": "ERROR",
        "event": "library",
        "message": "closed the connection",
    }


def test_the_pattern_reads_a_line_with_or_without_its_prefix() -> None:
    bare = str(relayed())
    prefixed = formatted(log.TextFormatter(), relayed())
    fields = {
        "client": "127.0.0.1:40000",
        "target": "[::1]:8080",
        "up": "10",
        "down": "2048",
        "seconds": "0.250",
        "outcome": "closed",
    }
    for line in (bare, prefixed):
        match = log.RELAYED.pattern.fullmatch(line)
        assert match is not None and match.groupdict() == fields
        assert log.message(line) == bare
    assert log.message("ready") == "ready"


def test_every_kind_has_its_level_and_fields() -> None:
    assert {
        event: (logging.getLevelName(kind.level), kind.fields) for event, kind in log.EVENTS.items()
    } == {
        "listening": ("INFO", ["host", "port"]),
        "listening_udp": ("INFO", ["host", "port"]),
        "capacity": ("INFO", ["limit", "connections", "flows", "pipes"]),
        "capturing": ("INFO", ["targets", "table"]),
        "capture_not_owned": ("WARNING", ["table", "command"]),
        "capture_not_removed": ("WARNING", ["table", "error"]),
        "privileges": ("INFO", ["capabilities", "user"]),
        "relayed": ("INFO", ["client", "target", "up", "down", "seconds", "outcome"]),
        "refused": ("WARNING", ["client"]),
        "failed": ("WARNING", ["client", "target", "reason"]),
        "gone": ("DEBUG", ["client"]),
        "connection_cap": ("WARNING", ["limit", "suppressed"]),
        "udp_flow": ("INFO", ["client", "target", "up", "down", "seconds"]),
        "udp_refused": ("WARNING", ["client"]),
        "udp_error": ("ERROR", ["error", "suppressed"]),
        "udp_flow_cap": ("WARNING", ["limit", "suppressed"]),
        "udp_reply_failed": ("WARNING", ["client", "target", "error"]),
        "summary": ("INFO", ["open", "relayed", "refused", "failed", "up", "down", "rate"]),
        "hangup": ("INFO", []),
        "accept_paused": ("ERROR", ["listener", "error", "suppressed"]),
        "loop_error": ("ERROR", ["error", "suppressed"]),
        "stopping": ("INFO", ["open", "grace"]),
        "stopped": ("INFO", ["seconds", "open", "relayed", "refused", "failed", "up", "down"]),
        "worker_started": ("DEBUG", ["number", "pid"]),
        "worker_died": ("ERROR", ["number", "pid", "ended", "then"]),
        "worker_unstarted": ("ERROR", ["number", "error", "delay"]),
    }


def test_say_logs_at_the_kind_level_through_configure(stream: io.StringIO) -> None:
    log.configure(logging.WARNING, "json", stream)
    log.say(relayed())  # INFO: below the level
    log.say(log.REFUSED.line(client="127.0.0.1:1"))
    log.say(log.UDP_ERROR.line(error=OSError(111, "Connection refused"), suppressed=0))
    logging.getLogger("wfpredirect.aio").error("from the library")
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [(line["level"], line["event"], line["message"]) for line in lines] == [
        (
            "WARNING",
            "refused",
            "refused 127.0.0.1:1: not redirected (addressed to the proxy itself)",
        ),
        ("ERROR", "udp_error", "udp error: [Errno 111] Connection refused (0 more suppressed)"),
        ("ERROR", "library", "from the library"),
    ]
    assert lines[1]["error"] == "[Errno 111] Connection refused"


def test_configure_again_replaces_its_handler(stream: io.StringIO) -> None:
    other = io.StringIO()
    log.configure(logging.INFO, "json", other)
    log.configure(logging.INFO, "text", stream)
    log.say(log.STOPPING.line(open=2, grace=5.0))
    assert other.getvalue() == ""
    assert log.message(stream.getvalue().rstrip("\n")) == "stopping: 2 open connections get 5 s"


def test_the_documented_events_are_the_events() -> None:
    """docs/command-line.md's table: each event once, with its level and fields."""
    text = project_file("docs/command-line.md").read_text(encoding="utf-8")
    table = text.split("<!-- events:", 1)[1].split("\n\n", 2)[1]
    documented = {}
    for row in table.splitlines()[2:]:
        event, level, _, fields = (cell.strip() for cell in row.strip("|").split(" | "))
        named = [field.strip("`") for field in fields.split(", ")] if fields else []
        documented[event.strip("`")] = (level, named)
    assert documented == {
        event: (logging.getLevelName(kind.level), kind.fields) for event, kind in log.EVENTS.items()
    }


@pytest.mark.parametrize("form", log.FORMATS)
def test_say_writes_what_logging_writes(
    stream: io.StringIO, form: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """say() writes a line itself while the loggers are as configure() left
    them: the same text as logging's own path, to the time."""
    monkeypatch.setattr(log.time, "time", lambda: CREATED)
    log.configure(logging.INFO, form, stream)
    handler = log._direct
    assert handler is not None
    texts = (relayed(), log.REFUSED.line(client="127.0.0.1:1"))
    assert [handler.direct(text) for text in texts] == [True, True]
    assert stream.getvalue().splitlines() == [
        formatted(handler.configured, text, text.kind.level) for text in texts
    ]


def test_say_leaves_a_changed_logging_setup_to_logging(stream: io.StringIO) -> None:
    """A filter, another handler or a level set after configure() is obeyed:
    say() then goes through logging."""
    log.configure(logging.INFO, "text", stream)
    proxy = logging.getLogger("wfpredirect.proxy")

    def no_refusals(record: logging.LogRecord) -> bool:
        return getattr(record, "event", "") != "refused"

    seen = io.StringIO()
    extra = logging.StreamHandler(seen)
    proxy.addFilter(no_refusals)
    proxy.addHandler(extra)
    try:
        assert log._direct is not None and not log._direct.direct(relayed())
        log.say(log.REFUSED.line(client="127.0.0.1:1"))
        log.say(log.STOPPING.line(open=0, grace=5.0))
    finally:
        proxy.removeFilter(no_refusals)
        proxy.removeHandler(extra)
    assert [log.message(line) for line in stream.getvalue().splitlines()] == [
        "stopping: 0 open connections get 5 s"
    ]
    assert seen.getvalue() == "stopping: 0 open connections get 5 s\n"
    logging.getLogger("wfpredirect").setLevel(logging.ERROR)
    log.say(log.REFUSED.line(client="127.0.0.1:2"))  # WARNING: below the level now
    assert len(stream.getvalue().splitlines()) == 1


def test_the_throttle_says_one_line_a_second_per_kind_and_counts_the_rest(
    stream: io.StringIO, monkeypatch: pytest.MonkeyPatch
) -> None:
    log.configure(logging.INFO, "json", stream)
    now = [100.0]
    monkeypatch.setattr(log.time, "monotonic", lambda: now[0])
    flood = log.LogLine("test_flood", "out of it ({suppressed} more suppressed)", logging.ERROR)
    other = log.LogLine("test_other", "other ({suppressed} more suppressed)", logging.ERROR)
    try:
        throttle = log.Throttle()
        said = [throttle.say(flood) for _ in range(5)]
        said.append(throttle.say(other))
        now[0] = 100.999
        said.append(throttle.say(flood))
        now[0] = 101.0
        said.append(throttle.say(flood))
        said.append(throttle.say(flood))
    finally:
        del log.EVENTS["test_flood"], log.EVENTS["test_other"]
    assert said == [True, False, False, False, False, True, False, True, False]
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [(line["event"], line["suppressed"], line["message"]) for line in lines] == [
        ("test_flood", 0, "out of it (0 more suppressed)"),
        ("test_other", 0, "other (0 more suppressed)"),
        ("test_flood", 5, "out of it (5 more suppressed)"),
    ]
