"""The prefilter literal of a regex: a substring every match of it contains.

A Filter (``rules/filters.py``) runs a failregex only on texts holding its literal, and the
routing gate tests a message's bytes for the literals before decoding it. Pure, no I/O.
"""

from __future__ import annotations

import re

_BRACE_QUANTIFIER = re.compile(r"\{\d*(?:,\d*)?\}")
_GLOBAL_FLAGS = re.compile(r"\(\?([aiLmsux]+)\)")
_ESCAPE_ARG = {"x": 2, "u": 4, "U": 8}
_ASCII_ALNUM = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")


def required_literal(pattern: str) -> str:
    """A substring that every match of ``pattern`` contains: the longest run of plain literal
    characters at nesting depth 0 that no quantifier applies to ("" when there is none).

    Conservative by construction: groups, classes, escapes such as ``\\d`` and anything under a
    quantifier end a run; an alternation at depth 0, or an inline ``(?i)``/``(?x)`` flag, means
    there is no required literal at all.
    """
    runs = _Runs()
    depth = 0
    i = 0
    n = len(pattern)
    while i < n:
        c = pattern[i]
        literal: str | None = None
        if c == "\\":
            i, literal = _escape(pattern, i)
        elif c == "[":
            i = _class_end(pattern, i)
        elif c == "(":
            flags = _GLOBAL_FLAGS.match(pattern, i)
            if flags is not None and ("i" in flags.group(1) or "x" in flags.group(1)):
                return ""  # case-insensitive or verbose: the text is not the input's
            if flags is not None or pattern.startswith("(?#", i):
                # A comment or a flag is no atom: a quantifier after it applies to what precedes.
                i = flags.end() if flags is not None else _comment_end(pattern, i)
                continue
            if depth == 0:
                runs.end()
            depth += 1
            runs.last_literal = False
            i += 1
            continue
        elif c == ")":
            depth -= 1
            runs.last_literal = False  # the atom is the group, not the run's last char
            i += 1
            continue
        elif c in "*+?" or (c == "{" and _BRACE_QUANTIFIER.match(pattern, i)):
            i = _quantifier_end(pattern, i)
            if depth == 0:
                runs.quantified()
            runs.last_literal = False
            continue
        elif c == "|":
            if depth == 0:
                return ""  # either side may match: no single literal is required
            i += 1
            continue
        elif c in ".^$":
            i += 1
        else:
            literal = c
            i += 1
        if depth <= 0:  # below 0 after an unbalanced ")": read on as at depth 0
            runs.add(literal)
    runs.end()
    return runs.best


class _Runs:
    """The runs of plain literal characters at depth 0, and the longest so far."""

    __slots__ = ("best", "last_literal", "run")

    def __init__(self) -> None:
        self.best = ""
        self.run: list[str] = []
        self.last_literal = False  # the previous atom is a literal char, the last of ``run``

    def add(self, literal: str | None) -> None:
        """An atom at depth 0: a literal character extends the run, anything else ends it."""
        if literal is None:
            self.end()
        else:
            self.run.append(literal)
            self.last_literal = True

    def quantified(self) -> None:
        """A quantifier at depth 0: the repeated char may occur zero times (or differ in
        count), so it leaves the run, which ends."""
        if self.last_literal:
            self.run.pop()
        self.end()

    def end(self) -> None:
        if len(self.run) > len(self.best):
            self.best = "".join(self.run)
        self.run.clear()
        self.last_literal = False


def _escape(pattern: str, i: int) -> tuple[int, str | None]:
    """Past the escape at ``i``: where it ends, and the character it stands for, or None for
    a class (\\d), an anchor (\\b), a backreference or a coded char, which are no literal."""
    n = len(pattern)
    nxt = pattern[i + 1] if i + 1 < n else ""
    if nxt not in _ASCII_ALNUM:
        return i + 2, nxt
    i += 2 + _ESCAPE_ARG.get(nxt, 0)
    if nxt == "N":
        close = pattern.find("}", i)
        i = n if close < 0 else close + 1
    elif nxt.isdigit():
        while i < n and pattern[i].isdigit():
            i += 1
    return i, None


def _class_end(pattern: str, i: int) -> int:
    """Past the character class that opens at ``i`` (a ``]`` first in it is a member)."""
    n = len(pattern)
    j = i + 1
    if j < n and pattern[j] == "^":
        j += 1
    if j < n and pattern[j] == "]":
        j += 1
    while j < n and pattern[j] != "]":
        j += 2 if pattern[j] == "\\" else 1
    return j + 1


def _comment_end(pattern: str, i: int) -> int:
    """Past the ``(?#...)`` comment that opens at ``i``."""
    j = i + 3
    while j < len(pattern) and pattern[j] != ")":
        j += 2 if pattern[j] == "\\" else 1
    return j + 1


def _quantifier_end(pattern: str, i: int) -> int:
    """Past the quantifier at ``i`` (``*``, ``+``, ``?`` or ``{m,n}``), lazy or possessive."""
    brace = _BRACE_QUANTIFIER.match(pattern, i) if pattern[i] == "{" else None
    i = brace.end() if brace is not None else i + 1
    if i < len(pattern) and pattern[i] in "?+":
        i += 1
    return i
