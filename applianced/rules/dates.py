"""Dates in a log line's text, found and cut out as fail2ban 1.0.2 does before its failregexes
run: its default date forms, and a filter's ``datepattern``.

Owns the date language of fail2ban filters: ``%``-codes (``%Y %ExY %y %Exy %m %Exm %d %Exd %b
%Exb %B %a %A %H %ExH %k %I %p %M %ExM %S %ExS %f %z %Z %%``), the prefixes ``{^LN-BEG}``
(anchored at the line's start, up to two non-word characters before the date) and ``{UNB}`` (no
word boundaries), the values ``{DATE}`` (each default form in its place), ``{DEFAULT}``,
``{NONE}``, ``EPOCH``, ``LEPOCH``, ``TAI64N``, ``ISO8601``, several patterns one a line. As
fail2ban: the text cut is the pattern's first plain ``(...)`` group when it has one, else what
it matched (``[17/Jun/2011 17:00:45] x`` leaves ``[] x`` with the default forms, `` x`` with
kerio's ``^\\[%d/%b/%Y %H:%M:%S\\]``); a date without a year takes the one that does not put
it in the future.

Called by ``rules/filters.py`` (a filter with a ``datepattern`` cuts the date before matching),
``rules/jail.py`` (builds the finder of a jail's pattern), ``conf/filterfiles/`` (checks a
pattern when a filter file is read) and ``cli/testfilter.py`` (dates of plain log files).
Pure: no I/O; the time found is for display, windows run on the time of receipt.

Over 400 lines, most of them the table of fail2ban's default forms and the ``%``-codes they
are written in, which belong together.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import NamedTuple

from applianced.errors import FilterError

__all__ = [
    "DEFAULT_FORMS",
    "DateFinder",
    "DateHit",
    "date_finder",
    "default_dates",
    "is_default_pattern",
]

_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_MONTHS_LONG = (
    "january",
    "february",
    "march",
    "april",
    "may",
    "june",
    "july",
    "august",
    "september",
    "october",
    "november",
    "december",
)
_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_DAYS_LONG = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_ZONE = r"Z|UTC|GMT|[+-][01]\d(?::?\d{2})?"
# The zone names %Z understands (hours east of UTC): UTC's and the common North American and
# European ones, as monit and others write them.
_ZONE_NAMES = {
    **dict.fromkeys(("Z", "UTC", "GMT", "UT", "WET"), 0),
    **{"BST": 1, "CET": 1, "WEST": 1, "CEST": 2, "EET": 2, "EEST": 3, "MSK": 3},
    **{"EST": -5, "EDT": -4, "CST": -6, "CDT": -5, "MST": -7, "MDT": -6, "PST": -8, "PDT": -7},
}

# Each %-code: the regex it stands for, in a group named after the field it gives. The "Ex"
# forms are stricter (fixed width, a plausible year), for dates without separators.
_CODES: dict[str, str] = {
    "Y": r"(?P<Y>\d{4})",
    "ExY": r"(?P<Y>20[0-2]\d)",
    "y": r"(?P<y>\d{2})",
    "Exy": r"(?P<y>\d{2})",
    "m": r"(?P<m>1[0-2]|0?[1-9])",
    "Exm": r"(?P<m>1[0-2]|0[1-9])",
    "d": r"(?P<d>3[01]|[12]\d|[0 ]?[1-9])",
    "Exd": r"(?P<d>3[01]|[12]\d|0[1-9])",
    "b": "(?P<b>" + "|".join(_MONTHS) + ")",
    "B": "(?P<B>" + "|".join(_MONTHS_LONG) + ")",
    "Exb": "(?P<B>" + "|".join(sorted({*_MONTHS_LONG, *_MONTHS}, key=len, reverse=True)) + ")",
    "a": "(?:" + "|".join(_DAYS) + ")",
    "A": "(?:" + "|".join(_DAYS_LONG) + ")",
    "H": r"(?P<H>2[0-3]|[01]?\d)",
    "ExH": r"(?P<H>2[0-3]|[01]\d)",
    "k": r" ?(?P<H>2[0-3]|[01]?\d)",
    "I": r"(?P<I>1[0-2]|0?[1-9])",
    "p": r"(?P<p>am|pm)",
    "M": r"(?P<M>[0-5]?\d)",
    "ExM": r"(?P<M>[0-5]\d)",
    "S": r"(?P<S>6[01]|[0-5]?\d)",
    "ExS": r"(?P<S>6[01]|[0-5]\d)",
    "f": r"(?P<f>\d{1,6})",
    "z": f"(?P<z>{_ZONE})",
    "Z": r"(?P<Z>[A-Z]{3,5})",
}
_CODE = re.compile(r"%(Ex[A-Za-z]|[A-Za-z%])")
_NAMED = frozenset(
    {"a", "A", "b", "B", "Exb", "p"}
)  # codes whose text is a name: the form ignores case

# fail2ban 1.0.2's default forms, as observed with its fail2ban-regex: each is tried anchored at
# the line's start first (all of them, in this order), then searched in the line.
DEFAULT_FORMS: tuple[str, ...] = (
    r"%ExY(?P<_sep>[-/.])%m(?P=_sep)%d(?:T|  ?)%H:%M:%S(?:[.,]%f)?(?:\s*%z)?",
    r"(?:%a )?%b %d %k:%M:%S(?:\.%f)?(?: %ExY)?",
    r"(?:%a )?%b %d %ExY %k:%M:%S(?:\.%f)?",
    r"%d(?P<_sep>[-/])%m(?P=_sep)(?:%ExY|%Exy) %k:%M:%S",
    r"%d(?P<_sep>[-/])%b(?P=_sep)%ExY[ :]?%H:%M:%S(?:\.%f)?(?: %z)?",
    r"%m/%d/%ExY:%H:%M:%S",
    r"%m-%d-%ExY %k:%M:%S(?:\.%f)?",
    "EPOCH",
    r"%Exy%Exm%Exd  ?%H:%M:%S",
    r"%b %d, %ExY %I:%M:%S %p",
    r"%ExY%Exm%Exd(?:T|  ?)%ExH%ExM%ExS(?:[.,]%f)?(?:\s*%z)?",
    r"(?:%Z )?(?:%a )?%b %d %k:%M:%S(?:\.%f)?(?: %ExY)?",
    r"(?:%z )?(?:%a )?%b %d %k:%M:%S(?:\.%f)?(?: %ExY)?",
    "TAI64N",
)
# Only searched for, never anchored (besides the anchored forms above), or only anchored.
_SEARCHED_ONLY = (r"^<%m/%d/%Exy@%H:%M:%S>", r"^%b-%d-%Exy %k:%M:%S")
_ANCHORED_ONLY = (r"%H:%M:%S",)
_DATE_FORMS = (*DEFAULT_FORMS, *_SEARCHED_ONLY)  # what {DATE} stands for, one form each

_LN_BEG = "{^LN-BEG}"
_START = r"(?:^|\b|(?=\W))"
_END = r"(?=\b|\W|$)"
_SPECIAL = {
    "EPOCH": r"(?P<epoch>\d{10,11}\b(?:\.\d{3,6})?)",
    "LEPOCH": r"(?P<lepoch>\d{10,11}(?:\d{3}(?:\.\d{1,3}|\d{3})?)?)",
    "TAI64N": r"(?P<tai>@[0-9a-f]{24})",
    "ISO8601": r"%ExY-%Exm-%ExdT%ExH:%ExM:%ExS(?:[.,]%f)?(?:\s*%z)?",
}


class DateHit(NamedTuple):
    """A date found in a text: where (``start``, ``end``), as written, and its time (None when
    the pattern matched without a date, as ``^WARNING:()**`` does). ``form`` is the pattern
    that found it, as test-filter reports it."""

    start: int
    end: int
    text: str
    when: datetime | None
    form: str


@dataclass(frozen=True, slots=True)
class _Form:
    """One compiled pattern: the regex, which group is the date's span, and the characters a
    text must start with for it to match (empty: it may start with anything)."""

    name: str
    regex: re.Pattern[str]
    span: int
    first: frozenset[str] = frozenset()


class DateFinder:
    """An ordered set of date forms: :meth:`find` gives the first date found and its time,
    :meth:`cut` the text without it (the hot path: no time is computed).

    ``anchored`` forms (matched at the text's start) are tried before the ``searched`` ones.
    A filter calls it only for texts its literal prefilter let through; ``first`` holds the
    characters a text must start with for any form to match (``[`` for kerio's pattern) when
    every form says so, so that an undated text costs one test.
    """

    __slots__ = ("anchored", "first", "searched")

    def __init__(self, anchored: Sequence[_Form], searched: Sequence[_Form]) -> None:
        self.anchored = tuple(anchored)
        self.searched = tuple(searched)
        forms = (*self.anchored, *self.searched)
        self.first: frozenset[str] = (
            frozenset().union(*(f.first for f in forms))
            if forms and all(f.first for f in forms)
            else frozenset()
        )

    def __repr__(self) -> str:
        return f"DateFinder({len(self.anchored)} anchored, {len(self.searched)} searched)"

    def find(self, text: str, now: datetime | None = None) -> DateHit | None:
        """The first date of ``text`` (anchored forms first), or None; a date without a year
        takes ``now``'s (the current time if None)."""
        found = self._first(text)
        if found is None:
            return None
        form, m = found
        start, end = _span(form, m)
        return DateHit(start, end, text[start:end], _when(m, now), form.name)

    def cut(self, text: str) -> str:
        """``text`` without its first date; unchanged when it has none."""
        if self.first and text[:1] not in self.first:  # most texts, with a literal-led pattern
            return text
        found = self._first(text)
        if found is None:
            return text
        start, end = _span(*found)
        return text[:start] + text[end:]

    def _first(self, text: str) -> tuple[_Form, re.Match[str]] | None:
        if self.first and text[:1] not in self.first:
            return None
        for form in self.anchored:
            m = form.regex.match(text)
            if m is not None:
                return form, m
        for form in self.searched:
            m = form.regex.search(text)
            if m is not None:
                return form, m
        return None


def _span(form: _Form, m: re.Match[str]) -> tuple[int, int]:
    start, end = m.span(form.span)
    if start < 0:  # an optional group that did not take part: nothing to cut
        return m.end(), m.end()
    return start, end


def is_default_pattern(pattern: str | None) -> bool:
    """Whether a filter's ``datepattern`` is fail2ban's default (none, ``{^LN-BEG}``,
    ``{DEFAULT}``), which the syslog header's date serves in the daemon."""
    return pattern is None or pattern.strip() in ("", _LN_BEG, "{DEFAULT}")


@functools.lru_cache(maxsize=256)
def date_finder(pattern: str | None = None) -> DateFinder:
    """The finder of a ``datepattern`` (several patterns one a line); fail2ban's defaults for
    None; one that finds nothing for ``{NONE}`` (no date in the text). Raises FilterError naming
    the pattern and what is wrong with it."""
    lines = [p.strip() for p in (pattern or "{DEFAULT}").splitlines() if p.strip()]
    anchored: list[_Form] = []
    searched: list[_Form] = []
    for line in lines:
        if line == "{NONE}":
            return DateFinder((), ())
        if line in ("{DEFAULT}", _LN_BEG):
            anchored += default_dates().anchored
            if line == "{DEFAULT}":
                searched += default_dates().searched
        else:
            forms = (
                [_compile(line.replace("{DATE}", _body(p)), line) for p in _DATE_FORMS]
                if "{DATE}" in line
                else [_compile(line, line)]
            )
            (anchored if line.startswith((_LN_BEG, "^")) else searched).extend(forms)
    return DateFinder(anchored, searched)


@functools.cache
def default_dates() -> DateFinder:
    """fail2ban's default forms, anchored and then searched (a filter without datepattern)."""
    return DateFinder(
        [_compile(_LN_BEG + p, p) for p in (*DEFAULT_FORMS, *_ANCHORED_ONLY)],
        [_compile(p, p) for p in _DATE_FORMS],
    )


def _body(pattern: str) -> str:
    """A default form as it stands inside a ``{DATE}``: without its own anchor."""
    return pattern.removeprefix("^")


def _compile(pattern: str, name: str) -> _Form:
    text = pattern
    start = _START
    if text.startswith(_LN_BEG):
        text, start = text[len(_LN_BEG) :], r"^\W{0,2}"
    elif text.startswith("^"):
        start = ""
    bounded = not text.startswith("{UNB}")
    text = text.removeprefix("{UNB}")
    special = _SPECIAL.get(text.upper())
    if special is not None:
        text = special
    if text.endswith("**"):  # fail2ban's "no date here" form, as in ^WARNING:()**
        text = text[:-1]
    regex, named = _translate(text, pattern)
    plain_group = _first_plain_group(regex)
    if plain_group == 0:
        regex = f"(?P<date>{regex})"
    if bounded:
        regex = start + regex + _END
    elif start.startswith("^"):
        regex = start + regex
    try:
        compiled = re.compile(regex, re.IGNORECASE if named else 0)
    except re.error as e:
        raise FilterError(f"datepattern {name!r}: not a valid pattern: {e}") from None
    span = compiled.groupindex["date"] if plain_group == 0 else plain_group
    first = _first_char(text) if start == "" else frozenset()
    if named:
        first = frozenset(c for ch in first for c in (ch.lower(), ch.upper()))
    return _Form(name, compiled, span, first)


def _first_char(text: str) -> frozenset[str]:
    """The one character a ``^``-anchored pattern's text starts with when it is a plain or
    escaped literal that no quantifier makes optional; empty otherwise."""
    m = _LITERAL_START.match(text)
    if m is None:
        return frozenset()
    return frozenset(m.group("escaped") or m.group("plain"))


_LITERAL_START = re.compile(r"\^(?:\\(?P<escaped>[^\w\s])|(?P<plain>[\w<@=\"' ]))(?![?*{+])")


def _translate(text: str, pattern: str) -> tuple[str, bool]:
    """The %-codes of ``text`` as regex groups; whether one of them is a name (%b, %a ...)."""
    out: list[str] = []
    pos = 0
    named = False
    for m in _CODE.finditer(text):
        code = m.group(1)
        out.append(text[pos : m.start()])
        pos = m.end()
        if code == "%":
            out.append("%")
            continue
        regex = _CODES.get(code)
        if regex is None:
            raise FilterError(
                f"datepattern {pattern!r}: %{code} is not a date code applianced knows; "
                f"use one of {', '.join('%' + c for c in _CODES)}"
            )
        named = named or code in _NAMED
        out.append(regex)
    out.append(text[pos:])
    return "".join(out), named


_GROUPS = re.compile(r"\\.|\[(?:\\.|[^\]\\])*\]|\((\?P<|\?)?")


def _first_plain_group(regex: str) -> int:
    """The number of the first capturing group without a name (fail2ban's date span), or 0."""
    number = 0
    for m in _GROUPS.finditer(regex):
        token = m.group(0)
        if not token.startswith("("):
            continue
        if m.group(1) is None:
            return number + 1
        if m.group(1) == "?P<":
            number += 1
    return 0


def _when(m: re.Match[str], now: datetime | None) -> datetime | None:
    """The time of a date match: aware (UTC or the written zone) when the text says its zone,
    naive (the log's local time) otherwise; None without a day or an hour."""
    fields = m.groupdict()
    for key in ("epoch", "lepoch", "tai"):
        value = fields.get(key)
        if value:
            return _absolute(key, value)
    if fields.get("H") is None and fields.get("I") is None:
        return None
    now = now or datetime.now(UTC)
    hour = int(fields["H"]) if fields.get("H") is not None else _hour12(fields)
    month = _month(fields, now)
    day = int(fields["d"]) if fields.get("d") else now.day
    year = int(fields["Y"]) if fields.get("Y") else None
    if year is None and fields.get("y"):
        year = 2000 + int(fields["y"])
    micro = int((fields.get("f") or "0").ljust(6, "0")[:6])
    try:
        when = datetime(
            year or now.year, month, day, hour, int(fields["M"]), min(int(fields["S"]), 59), micro
        )
    except (ValueError, TypeError, KeyError):
        return None
    if year is None and when - now.replace(tzinfo=None) > timedelta(days=1):
        when = when.replace(year=when.year - 1)  # "Dec 31" read on the 1st of January
    zone = _zone(fields.get("z") or fields.get("Z"))
    return when if zone is None else when.replace(tzinfo=zone)


def _absolute(kind: str, text: str) -> datetime:
    if kind == "tai":
        seconds = int(text[1:17], 16) - (1 << 62)
        nanos = int(text[17:], 16)
        return datetime.fromtimestamp(seconds, UTC) + timedelta(microseconds=nanos // 1000)
    if kind == "lepoch" and "." not in text and len(text) > 11:
        scale = 1000 if len(text) <= 14 else 1_000_000
        return datetime.fromtimestamp(int(text) / scale, UTC)
    return datetime.fromtimestamp(float(text), UTC)


def _hour12(fields: dict[str, str | None]) -> int:
    hour = int(fields["I"] or 0) % 12
    return hour + 12 if (fields.get("p") or "").lower() == "pm" else hour


def _month(fields: dict[str, str | None], now: datetime) -> int:
    if fields.get("m"):
        return int(fields["m"] or 0)
    name = (fields.get("b") or fields.get("B") or "").lower()[:3]
    return _MONTHS.index(name) + 1 if name else now.month


def _zone(text: str | None) -> timezone | None:
    if not text:
        return None
    hours = _ZONE_NAMES.get(text.upper())
    if hours is not None:
        return timezone(timedelta(hours=hours)) if hours else UTC
    m = re.fullmatch(r"([+-])(\d{2}):?(\d{2})?", text)
    if m is None:
        return None  # a zone name not in _ZONE_NAMES: the local time as written
    offset = timedelta(hours=int(m.group(2)), minutes=int(m.group(3) or 0))
    return timezone(-offset if m.group(1) == "-" else offset)
