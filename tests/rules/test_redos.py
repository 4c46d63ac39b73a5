"""The ReDoS guard: RE2 where a whole filter compiles there, ``re`` otherwise, and the bound on the
text a regex sees (applianced/rules/regex.py, Filter's ``engine`` and ``max_text``)."""

from __future__ import annotations

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from applianced.conf.filterfiles.native import shipped_filter, shipped_filter_names
from applianced.rules.filters import MAX_TEXT, Filter, Outcome
from applianced.rules.regex import compile_re2, re2_available, translate
from tests.rules.test_filters import ALL_ROWS, _split

pytestmark = pytest.mark.skipif(not re2_available(), reason="google-re2 is not installed")

# Under plain re this failregex backtracks exponentially on a run of word characters that does
# not end in ": ADDR": 22 characters take 0.6 s and each 2 more multiply that by about 4, so the
# 32 below would take about ten minutes (and the suite's 120 s timeout fails the test).
PATHOLOGICAL = r"^(\w+\s?)*: <HOST>$"
ADVERSARIAL = "a" * 32 + ": !"  # holds the literal ": ", so the prefilter lets it through

# The decision, measured: the filters whose every regex compiles under RE2 once the tag
# look-arounds that always hold are left out. The others use look-aheads of their own (the
# anti-injection "(?!.* from .* from )"), \b, or an address right after ":".
RE2_FILTERS = {"postfix-rbl", "postfix-relay", "postfix-sasl", "sshd"}


def test_pathological_filter_runs_under_re2_and_finishes() -> None:
    """A failregex that backtracks for minutes under re finishes at once through Filter."""
    f = Filter([PATHOLOGICAL], name="redos")
    assert f.engine == "re2"
    started = time.monotonic()
    assert f.match(ADVERSARIAL) is None
    assert f.examine(ADVERSARIAL) == (Outcome.MISSED, None, None)
    assert time.monotonic() - started < 1.0
    assert f.match("word word: 192.0.2.1").address is not None  # type: ignore[union-attr]


def test_a_filter_with_a_lookaround_falls_back_to_re_as_a_whole() -> None:
    """One regex RE2 cannot take (a look-ahead) puts every regex of the filter under re."""
    f = Filter(["^a <HOST>$", "^b(?!x) <HOST>$"], ["^c"], name="mixed")
    assert f.engine == "re"
    assert f.match("a 192.0.2.1") is not None
    assert Filter(["^a <HOST>$"], ["^c"]).engine == "re2"
    assert Filter(["^a <HOST>$"], engine="re").engine == "re"


def test_shipped_filters_engines() -> None:
    """The shipped filters that run under RE2 are exactly the measured set."""
    got = {n for n in shipped_filter_names() if shipped_filter(n).compile().engine == "re2"}
    assert got == RE2_FILTERS


def test_text_over_the_bound_is_cut() -> None:
    """A regex sees only the first max_text characters: an address past them is not found."""
    f = Filter(["from <HOST>"], max_text=64)
    assert f.match("x" * 40 + " from 192.0.2.1") is not None
    assert f.match("x" * 60 + " from 192.0.2.1") is None
    assert f.examine("x" * 60 + " from 192.0.2.1")[0] is Outcome.MISSED
    assert Filter(["from <HOST>"]).max_text == MAX_TEXT == 8192


def test_huge_text_through_a_re_filter_is_bounded() -> None:
    """A 1 MiB text through a backtracking-prone re filter costs only its first MAX_TEXT chars."""
    f = Filter([r"^(?!.* x .* x )(\S+ )*from <HOST>$"], name="re-only")
    assert f.engine == "re"
    started = time.monotonic()
    assert f.match("ab " * (1 << 19)) is None
    assert time.monotonic() - started < 5.0


@pytest.mark.parametrize(("service", "expected", "line"), ALL_ROWS)
def test_re2_and_re_agree_on_every_corpus_row(service: str, expected: str, line: str) -> None:
    """Every shipped filter gives the same outcome and capture under RE2 and under re."""
    _, msg = _split(line)
    for name in shipped_filter_names():
        fdef = shipped_filter(name)
        auto = fdef.compile()
        plain = Filter(fdef.failregex, fdef.ignoreregex, name=name, engine="re")
        assert auto.examine(msg) == plain.examine(msg), name
        assert auto.match(msg) == plain.match(msg), name


@pytest.mark.parametrize(
    ("regex", "text"),
    [
        (r"^user (?P<u>\w+) from <HOST>$", "user Jürgen from 192.0.2.1"),
        (r"^n (?P<u>\d+) from <HOST>$", "n ٣٤ from 192.0.2.1"),
        (r"^a\sfrom <HOST>$", "a\u00a0from 192.0.2.1"),
        (r"^a from <HOST>$", "a from 192.0.2.1\n"),
        (r"^x{,2}y from <HOST>$", "xxy from 192.0.2.1"),
        (r"^[^\s]+ from <HOST>$", "é from 2001:db8::1"),
        (r"(?i)^FROM <HOST>$", "from 192.0.2.1"),
    ],
)
def test_translation_keeps_python_meaning(regex: str, text: str) -> None:
    """Unicode \\w \\d \\s, $ before a final newline, {,n} mean under RE2 what they do in re."""
    auto = Filter([regex])
    assert auto.engine == "re2"
    assert auto.match(text) is not None
    assert auto.match(text) == Filter([regex], engine="re").match(text)


@pytest.mark.parametrize("regex", [r"\bx", r"[\W]", r"(?m)^x$", r"(?x) x", r"(a)\1", r"(?<=a)b"])
def test_what_re2_cannot_mean_the_same_is_left_to_re(regex: str) -> None:
    """Constructs without a faithful RE2 form get no RE2 twin (the filter then uses re)."""
    assert compile_re2(regex) is None


def test_translation_leaves_sets_and_escapes_alone() -> None:
    """A literal $ or { inside a set or escaped is not rewritten."""
    assert translate(r"[$]\$\{,") == r"[$]\$\{,"
    assert translate(r"[]\w]") == r"[]\p{L}\p{N}_]"


# Regexes whose classes, dots and case folds differ between UTF-8 and Latin-1 outside ASCII.
_TWIN_REGEXES = [
    r"^(?P<w>\w+)\s+(?P<d>\d+)\W(?P<s>\S*)$",
    r"(?i)^k(?P<a>[^\s\[]+)S\.(.)$",
    r"(?is)^(?P<all>.*)\b?",
    r"^[\p{L}_-]+ [^a-z]+ \p{Z}*(?P<end>.{0,3})$",
]
_ASCII = st.text(st.characters(max_codepoint=0x7F), max_size=30)


@settings(max_examples=300)
@given(st.sampled_from(_TWIN_REGEXES), _ASCII)
def test_the_latin1_twin_matches_ascii_text_as_the_utf8_program(regex: str, text: str) -> None:
    """On ASCII text, the program compiled for Latin-1 gives the spans of the UTF-8 one."""
    pattern = compile_re2(regex.replace(r"\b?", ""))
    assert pattern is not None and pattern._ascii is not pattern._prog
    data = text.encode("ascii")
    anchor = pattern._anchor
    assert pattern._ascii.Match(anchor, data, 0, len(data)) == pattern._prog.Match(  # type: ignore[attr-defined]
        anchor, data, 0, len(data)
    )


@pytest.mark.parametrize("regex", ["(?i)\u017f", "(?i)\u212a", "x\u0100"])
def test_a_pattern_latin1_cannot_spell_has_no_twin(regex: str) -> None:
    """Folds that reach ASCII from outside Latin-1 (long s, Kelvin sign): no twin, so every
    text runs through the UTF-8 program, where a case-blind long s still matches "s"."""
    pattern = compile_re2(regex)
    assert pattern is not None and pattern._ascii is pattern._prog
    if regex == "(?i)\u017f":
        assert pattern.search("s") is not None


def test_shipped_patterns_have_a_latin1_twin() -> None:
    """The speed-up reaches the shipped filters (else it would be dead weight)."""
    for name in shipped_filter_names():
        f = shipped_filter(name).compile()
        if f.engine == "re2":
            assert all(rx._ascii is not rx._prog for _, rx, _ in f._fail), name  # type: ignore[attr-defined]
