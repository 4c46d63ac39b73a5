"""Where the daemon's log lines go and how they look; ``service.main`` picks the observer.
``LogBudget`` caps the lines of a storm per second; ``banlines.BanLines`` keeps one for the
ban lines.

Two formats, one line per event (a traceback adds lines):

- ``text``: ``2025-01-31T12:00:00+0000 [applianced.appliance#info] ban sshd 203.0.113.7/32 ...``,
  Twisted's usual format, for a terminal or a log file;
- ``journal``: ``<6>[applianced.appliance] ban sshd 203.0.113.7/32 ...``: the sd-daemon(3)
  level prefix on every line and no timestamp (journald stamps each line, reads the prefix as the
  priority, and ``journalctl -p warning`` filters on it).

``auto`` is ``journal`` when stderr is the journal's stream (``$JOURNAL_STREAM``, set by systemd
for ``StandardError=journal``, names its device and inode), else ``text``.

``LevelFilter`` keeps the level an operator picks (``--log-level``, ``[daemon] log_level``): at
``info`` the log holds our own lines and anyone's warnings and errors; the info lines of
other libraries (Twisted's "Starting factory", "... starting on PORT", "(UDP Port N Closed)",
"Main loop terminated.") count as debug. ``log_text`` makes a syslog line safe for a log line.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import IO

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import (
    FileLogObserver,
    ILogObserver,
    LogEvent,
    LogLevel,
    eventAsText,
    textFileLogObserver,
)
from zope.interface import implementer

__all__ = [
    "FORMATS",
    "LEVELS",
    "SYSLOG_LEVELS",
    "LevelFilter",
    "LogBudget",
    "journal_line",
    "log_observer",
    "log_text",
    "under_journal",
]

FORMATS = ("auto", "text", "journal")
# The operator's names of the levels, lowest first (`--log-level`, `[daemon] log_level`).
LEVELS = ("debug", "info", "warning", "error")
_RANK = {
    LogLevel.debug: 0,
    LogLevel.info: 1,
    LogLevel.warn: 2,
    LogLevel.error: 3,
    LogLevel.critical: 4,
}
_OURS = "applianced"  # the namespace of every Logger of ours
# Characters a log line must not carry raw: C0 and C1 controls (a newline would forge a line),
# DEL, and the Unicode line and paragraph separators.
_ESCAPES = {
    c: f"\\x{c:02x}" if c < 0x100 else f"\\u{c:04x}"
    for c in (*range(0x20), *range(0x7F, 0xA0), 0x2028, 0x2029)
}

TIME_FORMAT = "%Y-%m-%dT%H:%M:%S%z"

# sd-daemon.h: SD_CRIT "<2>", SD_ERR "<3>", SD_WARNING "<4>", SD_INFO "<6>", SD_DEBUG "<7>".
SYSLOG_LEVELS: Mapping[LogLevel, int] = {
    LogLevel.critical: 2,
    LogLevel.error: 3,
    LogLevel.warn: 4,
    LogLevel.info: 6,
    LogLevel.debug: 7,
}


def journal_line(event: LogEvent) -> str | None:
    """``event`` as journald wants it: every line prefixed ``<N>``, no timestamp, or None for an
    event with no text."""
    text = eventAsText(event, includeTimestamp=False, includeSystem=False)
    if not text:
        return None
    system = event.get("log_system") or event.get("log_namespace", "-")
    level = SYSLOG_LEVELS.get(event.get("log_level", LogLevel.info), 6)
    first, *rest = text.rstrip("\n").split("\n")
    # Continuation lines (a traceback) keep the level, so `journalctl -p err` shows them whole.
    return "".join([f"<{level}>[{system}] {first}\n", *(f"<{level}>\t{line}\n" for line in rest)])


def under_journal(stream: IO[str], environ: Mapping[str, str] | None = None) -> bool:
    """Whether ``stream`` is the journal's stream: ``$JOURNAL_STREAM`` is ``DEVICE:INODE`` of it.

    Only a match counts, as sd-daemon(3) advises: a child of a service inherits the variable
    with a different stderr (a shell redirect to a file)."""
    env = os.environ if environ is None else environ
    value = env.get("JOURNAL_STREAM", "")
    device, sep, inode = value.partition(":")
    if not sep:
        return False
    try:
        st = os.fstat(stream.fileno())
        return (st.st_dev, st.st_ino) == (int(device), int(inode))
    except (OSError, ValueError):
        return False


def log_observer(
    stream: IO[str], fmt: str = "auto", environ: Mapping[str, str] | None = None
) -> ILogObserver:
    """The observer writing to ``stream`` in ``fmt`` (one of ``FORMATS``)."""
    if fmt not in FORMATS:
        raise ValueError(f"log format {fmt!r} is not one of {', '.join(FORMATS)}")
    if fmt == "journal" or (fmt == "auto" and under_journal(stream, environ)):
        return FileLogObserver(stream, journal_line)
    return textFileLogObserver(stream, timeFormat=TIME_FORMAT)


def log_text(text: str, limit: int = 300) -> str:
    """``text`` (a syslog line) fit for one log line: controls escaped (``\\x1b``), at most
    ``limit`` characters of it kept and the cut said."""
    if len(text) > limit:
        text = f"{text[:limit]}... ({len(text) - limit} more chars)"
    return text.translate(_ESCAPES)


@implementer(ILogObserver)
class LevelFilter:
    """Passes to ``inner`` the events at ``level`` (one of ``LEVELS``) or above. Another
    library's info event is passed as a debug one (the journal files it at priority 7).
    ``set`` changes the level (a reload)."""

    def __init__(self, inner: ILogObserver, level: str = "info") -> None:
        self._inner = inner
        self.set(level)

    def set(self, level: str) -> None:
        if level not in LEVELS:
            raise ValueError(f"log level {level!r} is not one of {', '.join(LEVELS)}")
        self._least = LEVELS.index(level)

    def __call__(self, event: LogEvent) -> None:
        rank = _RANK.get(event.get("log_level", LogLevel.info), 1)
        if rank == 1 and not str(event.get("log_namespace", "")).startswith(_OURS):
            rank, event = 0, {**event, "log_level": LogLevel.debug}
        if rank >= self._least:
            self._inner(event)


class LogBudget:
    """How many of a storm's lines may be logged one by one: ``per_second`` in each second
    (the journal would rate-limit them anyway, and each costs tens of us). The rest are
    counted and handed to ``summarise`` once, at the end of their second (or at ``close``)."""

    def __init__(
        self, clock: IReactorTime, per_second: int, summarise: Callable[[int], None]
    ) -> None:
        self._clock = clock
        self._per_second = per_second
        self._summarise = summarise
        self._until = 0.0  # the end of the current second
        self._left = 0  # lines still allowed before then
        self._unlogged = 0  # lines past that, summarised at _until
        self._call: IDelayedCall | None = None

    def allow(self, lines: int, now: float) -> int:
        """How many of ``lines`` may be logged one by one at ``now``; the rest are counted."""
        if not lines:
            return 0
        if not self._until - 1.0 <= now < self._until:  # a new second (or a clock step)
            if self._call is not None:  # a long turn ran past the summary's time
                self._call.cancel()
                self._summary()
            self._until, self._left = now + 1.0, self._per_second
        shown = min(lines, self._left)
        self._left -= shown
        if lines > shown:
            self._unlogged += lines - shown
            if self._call is None:
                self._call = self._clock.callLater(self._until - now, self._summary)
        return shown

    def close(self) -> None:
        """Summarise now what is still counted (the daemon stops)."""
        if self._call is not None and self._call.active():
            self._call.cancel()
            self._summary()

    def _summary(self) -> None:
        self._call = None
        unlogged, self._unlogged = self._unlogged, 0
        self._summarise(unlogged)
