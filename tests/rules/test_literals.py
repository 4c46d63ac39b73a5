"""The prefilter literal of a regex (rules/literals.py)."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from applianced.rules.literals import required_literal


@pytest.mark.parametrize(
    ("pattern", "literal"),
    [
        (r"^foo(?: bar baz)? from x", " from x"),  # an optional group is not required
        (r"abc|defgh", ""),  # alternation at depth 0: nothing is required
        (r"(?:ab|cd)hello world", "hello world"),  # alternation inside a group is fine
        (r"hel+o wor?ld", "o wo"),  # a quantified char is not required
        (r"x{2}abcdef", "abcdef"),
        (r"a{foo}bc", "a{foo}bc"),  # not a quantifier: literal braces
        (r"a\.b\.c\d+", "a.b.c"),  # escaped punctuation is literal, \d is not
        (r"\x41bcd", "bcd"),  # a coded char ends the run (and is skipped whole)
        (r"[(]abc\)def", "abc)def"),  # a class is skipped whole, even holding "("
        (r"(?i)hello", ""),  # case-insensitive: the text may differ in case
        (r"ab(?P<x>cdef)gh", "ab"),  # group contents are not at depth 0
        (r"^warning: [^\[]+\[", "warning: "),
    ],
)
def test_required_literal(pattern: str, literal: str) -> None:
    """required_literal finds the longest run at depth 0 that every match must contain."""
    re.compile(pattern)
    assert required_literal(pattern) == literal


_ATOM = st.one_of(
    st.text(alphabet="abc .:-", min_size=1, max_size=4).map(re.escape),
    st.sampled_from(
        [
            r"\d",
            r"\.",
            r"[ab]",
            r"x+",
            r"y?",
            r"z*?",
            r"w{2}",
            r"a{foo}",
            r"(?:ab)?",
            r"(?:a|bc)",
            r"(cd)",
            r".",
            r"\[",
            r"[(]",
            r"(?:q|r)+",
            r"(?#note)",
            r"\s",
        ]
    ),
)
_PATTERN = st.lists(_ATOM, min_size=1, max_size=8).map("".join)


@settings(max_examples=300, deadline=None)
@given(st.one_of(_PATTERN, st.tuples(_PATTERN, _PATTERN).map("|".join)), st.data())
def test_required_literal_is_in_every_match(pattern: str, data: st.DataObject) -> None:
    """For generated regexes, every string the regex matches contains its required literal."""
    literal = required_literal(pattern)
    text = data.draw(st.from_regex(re.compile(pattern), fullmatch=True))
    assert literal in text
