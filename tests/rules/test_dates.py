"""Tests for applianced.rules.dates: fail2ban 1.0.2's default date forms and datepattern
language. The expected cuts and times are what Debian's fail2ban-regex 1.0.2 reported for the
same lines (observed, not copied; local time UTC there), except where a comment says why not.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from applianced.errors import FilterError
from applianced.rules.dates import DateFinder, date_finder, default_dates, is_default_pattern

NOW = datetime(2026, 12, 7, 8, 0, tzinfo=UTC)
PLUS2 = timezone(timedelta(hours=2))


@pytest.mark.parametrize(
    ("line", "rest", "when"),
    [
        ("Jun 21 16:47:46 mx sshd[1]: x", " mx sshd[1]: x", datetime(2026, 6, 21, 16, 47, 46)),
        ("Mon Jun 21 16:47:46 2005 x", " x", datetime(2005, 6, 21, 16, 47, 46)),
        (
            "2005-06-21T16:47:46.123+02:00 x",
            " x",
            datetime(2005, 6, 21, 16, 47, 46, 123000, PLUS2),
        ),
        ("2005-06-21 16:47:46,123 x", " x", datetime(2005, 6, 21, 16, 47, 46, 123000)),
        ("2005-06-21T16:47:46Z x", " x", datetime(2005, 6, 21, 16, 47, 46, tzinfo=UTC)),
        ("[21/Jun/2005:16:47:46 +0200] x", "[] x", datetime(2005, 6, 21, 16, 47, 46, 0, PLUS2)),
        ("[17/Jun/2011 17:00:45] SMTP x", "[] SMTP x", datetime(2011, 6, 17, 17, 0, 45)),
        ("21/06/2005 16:47:46 x", " x", datetime(2005, 6, 21, 16, 47, 46)),
        ("21-06-2005 16:47:46 x", " x", datetime(2005, 6, 21, 16, 47, 46)),
        ("2005/06/21 16:47:46 x", " x", datetime(2005, 6, 21, 16, 47, 46)),
        ("21-Jun-2005 16:47:46 x", " x", datetime(2005, 6, 21, 16, 47, 46)),
        ("050621 16:47:46 x", " x", datetime(2005, 6, 21, 16, 47, 46)),
        ("Jun 21, 2005 4:47:46 PM x", " x", datetime(2005, 6, 21, 16, 47, 46)),
        ("1119365266.123 x", " x", datetime(2005, 6, 21, 14, 47, 46, 123000, UTC)),
        ("@4000000042b8286a00000000 x", " x", datetime(2005, 6, 21, 14, 47, 6, tzinfo=UTC)),
        (
            "[PDT Apr 16 21:05:29] x",
            "[] x",
            datetime(2026, 4, 16, 21, 5, 29, 0, timezone(timedelta(hours=-7))),
        ),
        ("  2005-06-21 16:47:46 x", "   x", datetime(2005, 6, 21, 16, 47, 46)),
        # Searched after every anchored form failed; the first date of the line wins.
        ("foo 2005-06-21 16:47:46 x", "foo  x", datetime(2005, 6, 21, 16, 47, 46)),
        (
            "Jun 21 16:47:46 a 2005-06-21 16:47:46 x",
            " a 2005-06-21 16:47:46 x",
            datetime(2026, 6, 21, 16, 47, 46),
        ),
        # A date without a year is never in the future: December read in January is last year's.
        ("Dec 31 23:59:59 x", " x", datetime(2026, 12, 31, 23, 59, 59).replace(year=2025)),
    ],
)
def test_default_forms_cut_the_date_as_fail2ban(line: str, rest: str, when: datetime) -> None:
    finder = default_dates()
    hit = finder.find(line, NOW)
    assert finder.cut(line) == rest
    assert hit is not None and hit.when == when
    assert line[: hit.start] + line[hit.end :] == rest


@pytest.mark.parametrize("line", ["no date here", "06/21/05 16:47:46 x", "x 16:47:46 y", ""])
def test_lines_without_a_known_date_are_left_whole(line: str) -> None:
    assert default_dates().cut(line) == line
    assert default_dates().find(line, NOW) is None


@pytest.mark.parametrize(
    ("pattern", "line", "rest", "when"),
    [
        # kerio: no group, the whole match is cut, brackets and all
        (
            r"^\[%d/%b/%Y %H:%M:%S\]",
            "[17/Jun/2011 17:00:45] SMTP",
            " SMTP",
            datetime(2011, 6, 17, 17, 0, 45),
        ),
        # a plain group is the date's span; what is around it stays
        (
            r"^[^\[]*\[({DATE})",
            "a [21/Jun/2005:16:47:46 +0200] x",
            "a [] x",
            datetime(2005, 6, 21, 16, 47, 46, 0, PLUS2),
        ),
        (
            r'^<co ts="{DATE}"\s+',
            '<co ts="2005-06-21T16:47:46.123+02:00" x',
            "x",
            datetime(2005, 6, 21, 16, 47, 46, 123000, PLUS2),
        ),
        ("^%m/%d/%Y %H:%M:%S", "06/21/2005 16:47:46 x", " x", datetime(2005, 6, 21, 16, 47, 46)),
        ("^%Y:%m:%d-%H:%M:%S", "2005:06:21-16:47:46 x", " x", datetime(2005, 6, 21, 16, 47, 46)),
        ("%d/%Exb/%Y", "on 21/June/2005 x", "on  x", None),
        (
            "^t=%Y-%m-%dT%H:%M:%S%z",
            "t=2005-06-21T16:47:46+0200 x",
            " x",
            datetime(2005, 6, 21, 16, 47, 46, 0, PLUS2),
        ),
        ("LEPOCH", "1119365266123 x", " x", datetime(2005, 6, 21, 14, 47, 46, 123000, UTC)),
        ("LEPOCH", "1119365266123456 x", " x", datetime(2005, 6, 21, 14, 47, 46, 123456, UTC)),
        ("EPOCH", "[1119365266] x", "[] x", datetime(2005, 6, 21, 14, 47, 46, tzinfo=UTC)),
        (
            "{^LN-BEG}TAI64N\n{^LN-BEG}",
            "@4000000042b8286a00000000 x",
            " x",
            datetime(2005, 6, 21, 14, 47, 6, tzinfo=UTC),
        ),
        (
            "{^LN-BEG}TAI64N\n{^LN-BEG}",
            "Jun 21 16:47:46 x",
            " x",
            datetime(2026, 6, 21, 16, 47, 46),
        ),
        # fail2ban's "no date here" form: a match, nothing cut, no time (fail2ban takes now)
        ("^WARNING:()**", "WARNING: x", "WARNING: x", None),
    ],
)
def test_datepattern(pattern: str, line: str, rest: str, when: datetime | None) -> None:
    finder = date_finder(pattern)
    hit = finder.find(line, NOW)
    assert finder.cut(line) == rest
    assert hit is not None and hit.when == when


def test_ln_beg_alone_is_anchored_only() -> None:
    finder = date_finder("{^LN-BEG}")
    assert finder.find("xx 2005-06-21 16:47:46 x", NOW) is None


def test_none_means_no_date_at_all() -> None:
    finder = date_finder("{NONE}")
    assert finder.find("Jun 21 16:47:46 x", NOW) is None
    assert finder.cut("Jun 21 16:47:46 x") == "Jun 21 16:47:46 x"


@pytest.mark.parametrize(
    ("pattern", "default"),
    [
        (None, True),
        ("{^LN-BEG}", True),
        (" {DEFAULT} ", True),
        ("EPOCH", False),
        (r"^\[%d\]", False),
    ],
)
def test_default_patterns(pattern: str | None, default: bool) -> None:
    assert is_default_pattern(pattern) is default


@pytest.mark.parametrize(
    ("pattern", "why"), [("%Q %H", "%Q is not a date code"), ("^(%H", "not a valid pattern")]
)
def test_bad_patterns_say_what_is_wrong(pattern: str, why: str) -> None:
    with pytest.raises(FilterError, match=why):
        date_finder(pattern)


@pytest.mark.parametrize(
    ("pattern", "first"),
    [
        (r"^\[%d/%b/%Y %H:%M:%S\] ?", {"["}),
        ('^<co ts="{DATE}"', {"<"}),
        ("^WARNING:()**", {"W"}),
        ("^%m/%d/%Y", set()),  # a date code first: any digit
        ("^x?%H:%M", set()),  # an optional first character
        (r"^\[%d\]" + "\n{^LN-BEG}", set()),  # one form may start with anything
    ],
)
def test_the_first_character_guard(pattern: str, first: set[str]) -> None:
    """A pattern anchored on a literal tells which character a dated text starts with; the
    guard never changes what is found."""
    finder = date_finder(pattern)
    assert finder.first == first
    for line in ("[17/Jun/2011 17:00:45] x", "x [17/Jun/2011 17:00:45]", "", "WARNING: x"):
        guarded = finder.find(line, NOW)
        unguarded = DateFinder(finder.anchored, finder.searched)
        unguarded.first = frozenset()
        assert guarded == unguarded.find(line, NOW)
