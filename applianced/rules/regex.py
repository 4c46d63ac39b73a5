"""The regex engines behind a Filter: RE2 (linear time) where a filter allows it, Python's ``re``
otherwise, and the bound on the text either is given.

A failregex runs on text an attacker writes. Python's ``re`` backtracks: a pattern such as
``(\\w+\\s?)*: <HOST>$`` takes minutes on a 30-character line. RE2 (google-re2, the binding of
Google's RE2) matches in time linear in the text whatever the pattern, but it has no look-arounds,
backreferences or atomic groups, and its ``\\w \\d \\s \\b`` are ASCII. So :func:`compile_re2`
translates a pattern into RE2 syntax with Python's meaning (Unicode classes, ``$`` before a final
newline, ``{,n}``) and gives up (None) where it cannot keep that meaning; :class:`Filter` then uses
RE2 for a filter only when *every* one of its regexes compiles, so one filter never mixes
engines, and ``re`` otherwise.

Called by ``rules/filters.py`` only. Pure: no I/O, no logging.
"""

from __future__ import annotations

import re
from typing import Protocol

try:
    import re2 as _re2_api  # type: ignore[import-untyped,unused-ignore]
    from re2 import _re2  # type: ignore[import-untyped,unused-ignore]
except ImportError:  # pragma: no cover - requirements.txt pins google-re2
    _re2 = None
    _re2_api = None

__all__ = ["MAX_TEXT", "Pattern", "Re2Pattern", "compile_re2", "re2_available"]

# Characters of text handed to a regex, at most: longer text is cut to its first MAX_TEXT
# characters. The listener's max_message_size (8192 bytes by default) already keeps a message's
# text within this bound; it only cuts when max_message_size is raised (up to 1 MiB).
MAX_TEXT = 8192


class MatchLike(Protocol):
    """What a Filter reads from a hit: groups by number or name."""

    def group(self, index: int | str, /) -> str | None: ...


class Pattern(Protocol):
    """A compiled regex as a Filter uses it (``re.Pattern[str]`` is one)."""

    @property
    def groupindex(self) -> object: ...

    @property
    def pattern(self) -> str: ...

    def search(self, string: str, /) -> MatchLike | None: ...


def re2_available() -> bool:
    """Whether google-re2 imports (it is pinned in requirements.txt)."""
    return _re2 is not None


class _Re2Match:
    __slots__ = ("_data", "_names", "_spans")

    def __init__(self, data: bytes, spans: list[tuple[int, int]], names: dict[str, int]) -> None:
        self._data = data
        self._spans = spans
        self._names = names

    def group(self, index: int | str, /) -> str | None:
        i = self._names[index] if isinstance(index, str) else index
        start, end = self._spans[i]
        return None if start < 0 else self._data[start:end].decode("utf-8")


class Re2Pattern:
    """An RE2 program with the ``search``/``group`` surface of ``re`` that a Filter needs.

    It calls the compiled ``_re2.RE2`` object directly: google-re2's pure-Python ``search``
    costs 8 us per call against 1.4 us here (measured on a postfix-sasl line); the version is
    pinned, and the corpus tests check that both engines agree on every row. Groups come back
    as the UTF-8 bytes of the span decoded, so offsets never need converting.

    An ASCII text (nearly every log line; ``str.isascii`` is a flag test) runs through a twin
    program compiled for Latin-1, when the pattern has one: the same regex over bytes instead
    of UTF-8 sequences, a quarter of the program and 3x faster with captures. On ASCII text both
    programs match alike: every class, ``.`` and case fold means the same for an ASCII
    character in both encodings (the folds that reach ASCII from outside it, U+017F long s and
    U+212A Kelvin sign, have no Latin-1 form, so a pattern holding them gets no twin).
    """

    __slots__ = ("_anchor", "_ascii", "_prog", "groupindex", "pattern")

    def __init__(
        self, pattern: str, prog: object, groupindex: dict[str, int], ascii_prog: object = None
    ) -> None:
        self.pattern = pattern
        self._prog = prog
        self._ascii = prog if ascii_prog is None else ascii_prog
        self._anchor = _re2.RE2.Anchor.UNANCHORED
        self.groupindex = groupindex

    def search(self, string: str, /) -> _Re2Match | None:
        if string.isascii():
            data = string.encode("ascii")
            prog = self._ascii
        else:
            try:
                data = string.encode("utf-8")
            except UnicodeEncodeError:  # lone surrogates: no UTF-8 form, so no match
                data = string.encode("utf-8", "replace")
            prog = self._prog
        spans = prog.Match(self._anchor, data, 0, len(data))  # type: ignore[attr-defined]
        if spans[0][0] < 0:
            return None
        return _Re2Match(data, spans, self.groupindex)


# Python's classes in RE2 syntax, outside a [set] and inside one (Python: str.isalnum() or "_";
# str.isdecimal(); str.isspace()).
_WORD, _DIGIT, _SPACE = r"\p{L}\p{N}_", r"\p{Nd}", r"\s\v\x1c-\x1f\x85\p{Z}"
_CLASS_IN = {"w": _WORD, "d": _DIGIT, "s": _SPACE}
_CLASS_OUT = {k: f"[{v}]" for k, v in _CLASS_IN.items()}
_CLASS_OUT.update({k.upper(): f"[^{v}]" for k, v in _CLASS_IN.items()})
_FLAGS = re.compile(r"\(\?([a-zA-Z]*)(?:-[a-zA-Z]*)?[:)]")


def translate(pattern: str) -> str | None:
    """``pattern`` (Python syntax) in RE2 syntax with the same meaning, or None when some construct
    has no faithful RE2 form (``\\b``, ``\\W`` inside a set, flags other than ``i``/``s``).
    Look-arounds and backreferences are left alone: RE2 refuses them at compile time."""
    out: list[str] = []
    i, n = 0, len(pattern)
    in_set = False
    while i < n:
        c = pattern[i]
        if c == "\\" and i + 1 < n:
            e = pattern[i + 1]
            if e in "bB":
                return None  # RE2's word boundary is ASCII-only
            if e == "Z":
                out.append(r"\z")
            elif in_set and e in _CLASS_IN:
                out.append(_CLASS_IN[e])
            elif in_set and e in "WDS":
                return None
            elif not in_set and e in _CLASS_OUT:
                out.append(_CLASS_OUT[e])
            else:
                out.append(pattern[i : i + 2])
            i += 2
            continue
        if in_set:
            if c == "]":
                in_set = False
            out.append(c)
            i += 1
            continue
        if c == "[":
            in_set = True
            out.append(c)
            i += 1
            for lead in ("^", "]"):  # "[]...]" and "[^]...]": the "]" is literal
                if i < n and pattern[i] == lead:
                    out.append(lead)
                    i += 1
            continue
        if c == "(" and pattern.startswith("(?", i):
            flags = _FLAGS.match(pattern, i)
            if flags is not None and set(flags.group(0)[2:-1]) - set("is-"):
                return None  # m would change $, x/a/u/L have no RE2 twin
        if c == "$":
            out.append(r"(?:\n?\z)")  # Python's $ also matches before a final newline
        elif c == "{" and pattern.startswith("{,", i):
            out.append("{0,")  # Python reads {,n} as {0,n}; RE2 as literal text
            i += 1
        else:
            out.append(c)
        i += 1
    return "".join(out)


def compile_re2(pattern: str) -> Re2Pattern | None:
    """``pattern`` compiled by RE2 with Python's meaning, or None when RE2 cannot take it."""
    if _re2 is None or _re2_api is None:
        return None
    text = translate(pattern)
    if text is None:
        return None
    options = _re2_api.Options()
    options.log_errors = False  # a refused pattern is an answer here, not an error to print
    try:
        regexp = _re2_api.compile(text, options)
    except _re2_api.error:
        return None
    # The twin for ASCII subjects (see Re2Pattern): none when Latin-1 cannot spell the pattern.
    options.encoding = _re2_api.Options.Encoding.LATIN1
    try:
        twin = _re2_api.compile(text.encode("latin-1"), options)._regexp
    except (UnicodeEncodeError, _re2_api.error):
        twin = None
    return Re2Pattern(pattern, regexp._regexp, dict(regexp.groupindex), twin)
