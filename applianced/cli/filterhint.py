"""Why a filter matched nothing: ``appliancectl test-filter``'s hint, for a log whose lines carry
a prefix or a date the filter does not expect. ``cli/testfilter.py`` calls :func:`why_missed`
with the first missed lines it kept, when no line matched.

Each line is read again another way (its syslog prefix cut, its host name field taken out, the
date at its start cut whole) and the first way under which the filter matches names what was
seen and what to try. A hint is only given when such a reading matches: never a guess. Pure:
parses and matches, no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from applianced.errors import ApplianceError
from applianced.receiver.parse import escape_controls, parse
from applianced.rules.dates import default_dates
from applianced.rules.filters import Filter
from applianced.rules.message import SyslogMessage

__all__ = ["why_missed"]


def why_missed(filt: Filter, lines: Iterable[tuple[int, bytes]], now: datetime) -> str | None:
    """The hint for the first of ``lines`` (line number, raw line) that the filter matches when
    read another way, or None."""
    for number, raw in lines:
        text = escape_controls(raw.rstrip(b"\r\n")).decode("utf-8", "replace")
        try:
            message: SyslogMessage | None = parse(raw, now)
        except ApplianceError:
            message = None
        if message is not None and message.timestamp is None:
            message = None  # not a syslog line: read whole, as test-filter read it
        hint = (
            _prefix(filt, number, message)
            or _fields(filt, number, message)
            or _dated(filt, number, message, text)
        )
        if hint is not None:
            return hint
    return None


def _prefix(filt: Filter, number: int, message: SyslogMessage | None) -> str | None:
    """A filter that reads the whole line (a fail2ban filter, an inline failregex) but expects
    no syslog prefix, or a prefix without the host name field."""
    if message is None or not filt.on_line:
        return None
    prefix = message.line[: len(message.line) - len(message.msg)].rstrip()
    if _matches(filt, message.msg):
        return (
            f"line {number}: the failregex does not allow the syslog prefix {prefix!r} the line "
            "carries before its text, and matches once it is cut: drop its ^, or let it read the "
            r"prefix first (^\s*\S+ \S+: ; fail2ban's filters begin with ^%(__prefix_line)s)"
        )
    if message.hostname is None and _matches(filt, message.line[2:]):
        return (
            f"line {number} has no host name after its date; test-filter reads it as the daemon "
            f"does, as {prefix!r}, and the failregex matches only without the host: let it read "
            r"one (\S+ ) before the program, where a forwarded message carries its sender's name"
        )
    return None


def _fields(filt: Filter, number: int, message: SyslogMessage | None) -> str | None:
    """A date followed by the text itself, no host name nor program: the parser read the
    text's first word as the host."""
    if message is None or message.app_name is not None or message.hostname is None:
        return None
    if not _matches(filt, f"{message.hostname} {message.msg}"):
        return None
    return (
        f"line {number} has no host name nor program after its date: its first word "
        f"{message.hostname!r} is read as the host, and the failregex matches the text with it; "
        "a syslog line reads DATE HOST PROGRAM[PID]: TEXT: test a log written by syslog"
    )


def _dated(filt: Filter, number: int, message: SyslogMessage | None, text: str) -> str | None:
    """A date at the start of the text the filter reads that it does not cut whole: a
    datepattern that excludes its form, a native filter given a non-syslog log, brackets
    (Kerio's own logs) left behind."""
    subject = text if message is None else (" " + message.line if filt.on_line else message.msg)
    hit = default_dates().find(subject)
    if hit is None or hit.start > 2:
        return None
    rest = subject[hit.end :].lstrip("] ")
    if not _matches(filt, rest):
        return None
    bracketed = subject[hit.start - 1 : hit.start] == "["
    seen = f"line {number} begins with a date ({hit.text!r}"
    seen += ", bracketed as in Kerio's own logs)" if bracketed else ")"
    if filt.dates is not None:
        advice = "the filter's datepattern does not read it: make it read this form"
    elif not filt.on_line:
        advice = (
            "the filter reads syslog messages: test the syslog copy of this log (the server "
            "logging through syslog), or a fail2ban filter whose datepattern reads this date"
        )
    else:
        advice = (
            r"give a datepattern that cuts it whole (Kerio's: ^\[%d/%b/%Y %H:%M:%S\]) "
            "or drop the failregex's ^"
        )
    return f"{seen}, and the failregex matches what follows it: {advice}"


def _matches(filt: Filter, text: str) -> bool:
    """Whether the filter matches ``text``, with or without the space a date leaves before it."""
    return filt.match(text) is not None or filt.match(" " + text) is not None
