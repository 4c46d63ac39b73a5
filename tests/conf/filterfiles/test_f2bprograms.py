"""Programs from a fail2ban filter's ``_daemon`` (conf/filterfiles/f2bprograms.py): the globs
never narrower than the regex, or None when the translator cannot tell."""

from __future__ import annotations

import pytest

from applianced.conf.filterfiles.f2bprograms import globs


@pytest.mark.parametrize(
    ("regex", "expected"),
    [
        (r"sshd", ["sshd"]),
        (r"demo(?:-auth)?", ["demo-auth", "demo"]),
        (r"(?:sshd|dropbear)", ["sshd", "dropbear"]),
        (
            r"postfix(-\w+)?/(?:submission/)?smtp[ds]",
            ["postfix-*/submission/smtp?", "postfix-*/smtp?", "postfix/submission/smtp?",
             "postfix/smtp?"],
        ),
        (r"(?P<x>ab)c", ["abc"]),
        (r"a.b", ["a?b"]),
        (r"a\.b", ["a.b"]),
        (r"a\d", ["a?"]),
        (r"a*b+", ["**"]),
        (r"^x$", ["x"]),
        (r"a|b|c", ["a", "b", "c"]),
    ],
)  # fmt: skip
def test_globs_cover_every_match(regex: str, expected: list[str]) -> None:
    assert globs(regex) == expected


@pytest.mark.parametrize(
    "regex",
    [r"a{2}", r"(?i)x", r"(ab", r"ab)", r"a\*", "(?:a|b)(?:c|d)(?:e|f)(?:g|h)(?:i|j)(?:k|l)"],
)
def test_globs_give_up_beyond_the_translator(regex: str) -> None:
    """Repeats, flags, unbalanced groups, escaped glob characters and more than 32 globs."""
    assert globs(regex) is None
