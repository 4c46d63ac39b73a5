"""The daemon's stderr formats: journald level prefixes without timestamps, or plain text."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
from twisted.internet.protocol import Factory
from twisted.internet.task import Clock
from twisted.logger import (
    LogEvent,
    Logger,
    LogLevel,
    LogPublisher,
    capturedLogs,
)
from twisted.python import log as legacy
from twisted.python.failure import Failure

from applianced.logs import (
    LevelFilter,
    LogBudget,
    journal_line,
    log_observer,
    log_text,
    under_journal,
)


def emit(observer_stream: io.StringIO, fmt: str, environ: dict[str, str] | None = None) -> str:
    publisher = LogPublisher(log_observer(observer_stream, fmt, environ or {}))
    log = Logger(namespace="applianced.appliance", observer=publisher)
    log.info(
        "ban {jail} {network} for {duration}", jail="sshd", network="203.0.113.7/32", duration="1h"
    )
    log.warn("reload refused: {error}", error="appliance.toml:3: unknown key")
    log.error("enforcement failed")
    log.debug("detail")
    log.critical("cannot continue")
    return observer_stream.getvalue()


def test_journal_format_prefixes_levels_and_drops_timestamps() -> None:
    """One line per event, `<N>` from sd-daemon.h for the level, no timestamp."""
    out = emit(io.StringIO(), "journal")
    assert out.splitlines() == [
        "<6>[applianced.appliance] ban sshd 203.0.113.7/32 for 1h",
        "<4>[applianced.appliance] reload refused: appliance.toml:3: unknown key",
        "<3>[applianced.appliance] enforcement failed",
        "<7>[applianced.appliance] detail",
        "<2>[applianced.appliance] cannot continue",
    ]


def test_text_format_keeps_timestamps() -> None:
    """Outside systemd the line has a timestamp and `[namespace#level]`, no level prefix."""
    line = emit(io.StringIO(), "text").splitlines()[0]
    assert line.endswith(" [applianced.appliance#info] ban sshd 203.0.113.7/32 for 1h")
    assert line[:4].isdigit()
    assert not line.startswith("<")


def test_traceback_lines_all_carry_the_level() -> None:
    """A failure's traceback stays at error level line by line (`journalctl -p err` shows it)."""
    try:
        1 / 0  # noqa: B018
    except ZeroDivisionError:
        failure = Failure()
    text = journal_line(
        {
            "log_format": "control request failed",
            "log_level": LogLevel.critical,
            "log_namespace": "applianced.control",
            "log_failure": failure,
        }
    )
    assert text is not None
    lines = text.splitlines()
    assert lines[0] == "<2>[applianced.control] control request failed"
    assert len(lines) > 2
    assert all(line.startswith("<2>\t") for line in lines[1:])
    assert "ZeroDivisionError" in lines[-1]


def test_event_without_text_writes_nothing() -> None:
    """An event with no format and no failure produces no line."""
    assert journal_line({"log_level": LogLevel.info}) is None


def test_auto_follows_journal_stream(tmp_path: Path) -> None:
    """auto picks journal only when $JOURNAL_STREAM names this very stream (device:inode)."""
    with (tmp_path / "err").open("w") as stream:
        st = os.fstat(stream.fileno())
        ours = {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}
        assert under_journal(stream, ours)
        assert not under_journal(stream, {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino + 1}"})
        assert not under_journal(stream, {"JOURNAL_STREAM": "garbage"})
        assert not under_journal(stream, {})
        publisher = LogPublisher(log_observer(stream, "auto", ours))
        Logger(namespace="t", observer=publisher).warn("hello")
    assert (tmp_path / "err").read_text() == "<4>[t] hello\n"
    # A StringIO has no file descriptor: never the journal.
    assert not under_journal(io.StringIO(), ours)


def test_unknown_format_is_refused() -> None:
    """A format name that is not auto/text/journal is an error, not a silent default."""
    with pytest.raises(ValueError, match="not one of"):
        log_observer(io.StringIO(), "json")


def test_log_budget_allows_per_second_and_summarises_the_rest_once() -> None:
    clock = Clock()
    summaries: list[int] = []
    budget = LogBudget(clock, 3, summaries.append)
    assert budget.allow(2, 0.0) == 2
    assert budget.allow(4, 0.5) == 1
    assert budget.allow(2, 0.6) == 0
    assert summaries == []
    clock.advance(1.0)
    assert summaries == [5]
    assert budget.allow(3, 1.0) == 3


def test_log_budget_close_summarises_what_is_counted() -> None:
    clock = Clock()
    summaries: list[int] = []
    budget = LogBudget(clock, 1, summaries.append)
    budget.allow(3, 0.0)
    budget.close()
    assert summaries == [2]
    clock.advance(5.0)
    assert summaries == [2]


def twisted_events() -> list[LogEvent]:
    """What Twisted itself logs around a daemon's life, captured as it logs it: a factory's
    start and stop, a port opened and closed (legacy `log.msg`), an unhandled error."""
    with capturedLogs() as events:
        factory = Factory()
        factory.noisy = True
        factory.doStart()
        factory.doStop()
        legacy.msg("SyslogUDP starting on 5514")
        legacy.msg("(UDP Port 5514 Closed)")
        try:
            1 / 0  # noqa: B018
        except ZeroDivisionError:
            legacy.err(None, "Unhandled error in Deferred:")
    return list(events)


def shown(level: str, events: list[LogEvent]) -> list[str]:
    stream = io.StringIO()
    observer = LevelFilter(log_observer(stream, "journal", {}), level)
    for event in events:
        observer(event)
    return stream.getvalue().splitlines()


def test_twisted_chatter_is_debug_its_errors_are_not() -> None:
    """At the default level Twisted's factory and port lines are gone, its errors stay; at
    debug its lines show, at the journal's debug priority."""
    events = twisted_events()
    at_debug = shown("debug", events)
    for chatter in ("Starting factory", "Stopping factory", "starting on 5514", "Closed)"):
        assert any(line.startswith("<7>") and chatter in line for line in at_debug), chatter
    at_info = shown("info", events)
    assert at_info[0].startswith("<2>") and "Unhandled error in Deferred:" in at_info[0]
    assert any("ZeroDivisionError" in line for line in at_info)
    assert not any(
        chatter in line for line in at_info for chatter in ("factory", "starting on", "Closed)")
    )


def test_our_lines_follow_the_level() -> None:
    publisher_events: list[LogEvent] = []
    log = Logger(namespace="applianced.appliance", observer=publisher_events.append)
    log.debug("detail")
    log.info("ban sshd 203.0.113.7/32")
    log.warn("reload refused")
    log.error("enforcement failed")
    assert [line[:3] for line in shown("debug", publisher_events)] == ["<7>", "<6>", "<4>", "<3>"]
    assert [line[:3] for line in shown("info", publisher_events)] == ["<6>", "<4>", "<3>"]
    assert [line[:3] for line in shown("warning", publisher_events)] == ["<4>", "<3>"]
    assert [line[:3] for line in shown("error", publisher_events)] == ["<3>"]


def test_a_level_set_later_applies_to_the_next_event() -> None:
    passed: list[LogEvent] = []
    levels = LevelFilter(passed.append, "info")
    event = {"log_level": LogLevel.info, "log_namespace": "applianced.appliance"}
    levels(event)
    levels.set("warning")
    levels(event)
    assert passed == [event]
    with pytest.raises(ValueError, match="not one of debug, info, warning, error"):
        levels.set("verbose")


def test_log_text_escapes_controls_and_bounds_the_length() -> None:
    assert log_text("a\nb\x1b[0m\x7f\u2028c\x85") == "a\\x0ab\\x1b[0m\\x7f\\u2028c\\x85"
    assert log_text("é ü 漢字 tab\there") == "é ü 漢字 tab\\x09here"
    assert log_text("x" * 20, limit=5) == "xxxxx... (15 more chars)"
