"""Programs from a fail2ban filter's ``_daemon``: the app-name globs that route a message to
the jail, never narrower than the regex, so that routing loses no line fail2ban would match
there. Called by ``fail2ban.py``; pure.
"""

from __future__ import annotations

from applianced.conf.filterfiles.f2bini import Resolver

_MAX_GLOBS = 32
_CLASS_ESCAPES = frozenset("wWdDsS")


def programs_of(r: Resolver) -> tuple[str, ...]:
    """App-name globs for ``_daemon`` when the filter's regexes use it, else () (every
    program)."""
    if "_daemon" not in r.used or not r.known("_daemon"):
        return ()
    found = globs(r.value("_daemon").strip())
    if not found or any(g in ("", "*") for g in found):
        return ()
    return tuple(dict.fromkeys(found))


def globs(regex: str) -> list[str] | None:
    """The fnmatch globs covering every string ``regex`` fully matches, or None when the regex
    is beyond this small translator (alternations, optional parts, classes, repeats)."""
    parser = _GlobParser(regex)
    try:
        result = parser.alternatives()
    except (ValueError, IndexError):
        return None
    return result if parser.pos == len(regex) else None


class _GlobParser:
    """A recursive descent over ``regex`` from ``pos``: each method returns the globs of what
    it read, or None when it cannot."""

    def __init__(self, regex: str) -> None:
        self.regex = regex
        self.pos = 0

    def alternatives(self) -> list[str] | None:
        out: list[str] = []
        while True:
            seq = self.sequence()
            if seq is None:
                return None
            out.extend(seq)
            if self.pos < len(self.regex) and self.regex[self.pos] == "|":
                self.pos += 1
                continue
            return out if len(out) <= _MAX_GLOBS else None

    def sequence(self) -> list[str] | None:
        regex = self.regex
        variants = [""]
        while self.pos < len(regex) and regex[self.pos] not in "|)":
            got = self.atom()
            if got is None:
                return None
            if self.pos < len(regex) and regex[self.pos] in "?*+":
                q = regex[self.pos]
                self.pos += 1
                if self.pos < len(regex) and regex[self.pos] in "?+":
                    self.pos += 1
                got = [*got, ""] if q == "?" else ["*"]
            elif self.pos < len(regex) and regex[self.pos] == "{":
                return None
            variants = [v + a for v in variants for a in got]
            if len(variants) > _MAX_GLOBS:
                return None
        return variants

    def atom(self) -> list[str] | None:
        regex = self.regex
        c = regex[self.pos]
        if c == "(":
            return self.group()
        if c == "\\":
            nxt = regex[self.pos + 1 : self.pos + 2]
            self.pos += 2
            if nxt in _CLASS_ESCAPES:
                return ["?"]
            if not nxt or nxt.isalnum():
                return None
            return None if nxt in "*?[]" else [nxt]
        if c == "[":
            end = regex.find("]", self.pos + 2)
            if end < 0:
                return None
            self.pos = end + 1
            return ["?"]
        self.pos += 1
        if c == ".":
            return ["?"]
        if c in "^$":
            return [""]
        return [c]

    def group(self) -> list[str] | None:
        regex = self.regex
        self.pos += 1
        if regex.startswith("?:", self.pos):
            self.pos += 2
        elif regex.startswith("?P<", self.pos):
            self.pos = regex.index(">", self.pos) + 1
        elif regex.startswith("?", self.pos):
            return None
        inner = self.alternatives()
        if inner is None or self.pos >= len(regex) or regex[self.pos] != ")":
            return None
        self.pos += 1
        return inner
