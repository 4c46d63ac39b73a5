"""fail2ban's filter and jail files read: configparser's format with fail2ban's ``[INCLUDES]``
(``before``/``after``, relative to the including file), ``NAME.local`` after ``NAME.conf``,
and its two substitutions, ``%(name)s`` / ``%(section/name)s`` / ``%(known/name)s`` and
``<name>`` (``<mdre-<mode>>``), over ``[Init]``, ``[Definition]`` and ``[DEFAULT]``.

Every value keeps the file and line it came from, for errors. Called by ``fail2ban.py``,
which builds the filter from what this resolves, and by ``f2bjails.py``, which reads a jail
section's options the same way; reads files, nothing else.

The file format is configparser's (``=``/``:``, indented continuation lines, ``#``/``;``
comments, ``;`` inline comments after whitespace); configparser reads it, with its own
interpolation off: fail2ban's ``%(section/name)s`` and ``<name>`` forms are resolved here.
"""

from __future__ import annotations

import configparser
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from applianced.errors import FilterError

_PERCENT = re.compile(r"%\((?P<name>[^)]+)\)s|%%|%")
_TAG_NAME = re.compile(r"(?<!\?P)<(?P<name>[^<>\s]+)>")
_ALONE = re.compile(r"^\s*(?:%\((?P<pct>[^)]+)\)s|<(?P<tag>[^<>\s]+)>)\s*$")
_MAX_DEPTH = 60


@dataclass(frozen=True, slots=True)
class Entry:
    """One option's value as one file set it; ``previous`` is what it overrode (``known/``)."""

    value: str
    path: Path
    line: int  # of the ``name =`` line
    value_lines: tuple[int, ...]  # the line of each non-empty line of the value
    previous: Entry | None = None


@dataclass(frozen=True, slots=True)
class Located:
    text: str
    path: Path
    line: int


class Sections:
    """Every section's options over the files read so far; later files override."""

    def __init__(self) -> None:
        self.sections: dict[str, dict[str, Entry]] = {}
        self.files: list[Path] = []

    def read(self, path: Path, stack: tuple[Path, ...] = ()) -> None:
        """Read ``path`` with its ``before`` includes first and its ``after`` includes last."""
        path = path.resolve()
        if path in stack:
            chain = " -> ".join(str(p) for p in (*stack, path))
            raise FilterError(f"{path}: include loop: {chain}")
        text = _read_text(path)
        parser = configparser.RawConfigParser(
            interpolation=None,
            default_section="\x00",  # [DEFAULT] is an ordinary section here; merged below
            inline_comment_prefixes=(";",),
            strict=False,
            empty_lines_in_values=True,  # as fail2ban: a comment line does not end a value
        )
        parser.optionxform = str  # type: ignore[assignment,method-assign]
        try:
            parser.read_string(text, source=str(path))
        except configparser.Error as exc:
            errors = getattr(exc, "errors", None)
            line = errors[0][0] if errors else getattr(exc, "lineno", None)
            at = f":{line}" if line else ""
            raise FilterError(f"{path}{at}: not a fail2ban config file: {exc.message}") from None
        lines = _value_lines(text)
        includes = parser["INCLUDES"] if parser.has_section("INCLUDES") else {}
        for which in ("before", "after"):
            if which == "after":
                self._take(parser, path, lines)
            for name in str(includes.get(which, "")).split():
                target = path.parent / name
                if not target.exists():
                    if target.suffix == ".local":
                        continue  # an optional override that is not there
                    number = lines.get(("INCLUDES", which), (0, ()))[0]
                    raise FilterError(
                        f"{path}:{number}: [INCLUDES] {which} = {name}: no such file {target}"
                    )
                self.read(target, (*stack, path))

    def _take(
        self,
        parser: configparser.RawConfigParser,
        path: Path,
        lines: Mapping[tuple[str, str], tuple[int, tuple[int, ...]]],
    ) -> None:
        self.files.append(path)
        for section in parser.sections():
            if section == "INCLUDES":
                continue
            into = self.sections.setdefault(section, {})
            for option, value in parser.items(section, raw=True):
                line, value_lines = lines.get((section, option), (0, ()))
                into[option] = Entry(value or "", path, line, value_lines, into.get(option))


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise FilterError(f"{path}: cannot read the fail2ban file: {exc}") from None


_HEADER = re.compile(r"^\[(?P<section>[^\]]+)\]")
_OPTION = re.compile(r"^(?P<name>[^\s=:][^=:]*?)\s*[=:]")


def _value_lines(text: str) -> dict[tuple[str, str], tuple[int, tuple[int, ...]]]:
    """Where each (section, option) is set, and the line of each non-empty line of its value,
    following configparser's rules (comment lines inside a value are skipped)."""
    out: dict[tuple[str, str], tuple[int, tuple[int, ...]]] = {}
    section = ""
    current: tuple[str, str] | None = None
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if not stripped or stripped.startswith(("#", ";")):
            continue
        if raw[0].isspace() and current is not None:
            start, vals = out[current]
            out[current] = (start, (*vals, number))
            continue
        header = _HEADER.match(raw)
        if header:
            section, current = header.group("section"), None
            continue
        option = _OPTION.match(raw)
        if option:
            current = (section, option.group("name").strip())
            after = raw[option.end() :].split(" ;")[0].strip()
            out[current] = (number, (number,) if after else ())
    return out


class Resolver:
    """fail2ban's two substitutions over one section's view of the options (``section``:
    ``Definition`` for a filter, the jail's own for a jail).

    Precedence for a name: the filter options from the jail (``name[mode=...]``), ``[Init]``,
    then ``section``, then ``[DEFAULT]``. ``%(name)s`` and ``<name>`` both resolve names;
    a ``<TAG>`` that is no option (``<HOST>``, ``<F-USER>``) stays for the Filter.
    """

    def __init__(
        self, s: Sections, options: Mapping[str, str], path: Path, section: str = "Definition"
    ) -> None:
        self.s = s
        self.section = section
        self.path = path
        self.options = dict(options)
        self.used: set[str] = set()
        # The section whose value is being resolved: its %(known/name)s is that section's
        # earlier value ([lt_journal] of asterisk.conf over common.conf's).
        self._within = [section]

    def entry(self, name: str, section: str | None = None) -> Entry | None:
        section = section or self.section
        if "/" in name:
            section, _, name = name.partition("/")
            if section == "known":  # the value before the one in force: an earlier file's,
                found = [  # or else the one of a section below (Definition -> DEFAULT)
                    e
                    for sec in ("Init", self._within[-1], "DEFAULT")
                    if (e := self.s.sections.get(sec, {}).get(name)) is not None
                ]
                if not found:
                    return None
                return found[0].previous or (found[1] if len(found) > 1 else None)
            got = self.s.sections.get(section, {}).get(name)
            return got or self.s.sections.get("DEFAULT", {}).get(name)
        # In another section's value (lt_journal/...), a name not set there is ``section``'s.
        for sec in dict.fromkeys(("Init", self._within[-1], section, "DEFAULT")):
            got = self.s.sections.get(sec, {}).get(name)
            if got is not None:
                return got
        return None

    def known(self, name: str) -> bool:
        return name in self.options or self.entry(name) is not None

    def raw(self, name: str) -> tuple[str, Path, int]:
        if name in self.options:
            return self.options[name], self.path, 0
        e = self.entry(name)
        if e is None:
            raise FilterError(f"{self.path}: the filter uses %({name})s, which is not defined")
        return e.value, e.path, e.line

    def value(self, name: str, depth: int = 0) -> str:
        """``name`` with every substitution done."""
        if depth > _MAX_DEPTH:
            raise FilterError(f"{self.path}: {name!r} refers to itself (a substitution loop)")
        self.used.add(name.rpartition("/")[2])
        text, path, line = self.raw(name)
        section = name.partition("/")[0] if "/" in name else self._within[-1]
        self._within.append(self._within[-1] if section == "known" else section)
        try:
            return self.expand(text, path, line, depth + 1)
        finally:
            self._within.pop()

    def expand(self, text: str, path: Path, line: int, depth: int = 0) -> str:
        def percent(m: re.Match[str]) -> str:
            if m.group(0) == "%%":
                return "%"
            ref = m.group("name")
            if ref is None:
                raise FilterError(f"{path}:{line}: a lone '%' must be written '%%'")
            if not self.known(ref):
                raise FilterError(f"{path}:{line}: %({ref})s is not defined")
            return self.value(ref, depth)

        text = _PERCENT.sub(percent, text)
        for _ in range(_MAX_DEPTH):
            changed = False

            def tag(m: re.Match[str]) -> str:
                nonlocal changed
                ref = m.group("name")
                if not self.known(ref):
                    return m.group(0)
                changed = True
                return self.value(ref, depth)

            text = _TAG_NAME.sub(tag, text)
            if not changed:
                return text
        raise FilterError(f"{path}:{line}: substitutions do not end (a loop of <name> tags)")

    def lines(self, name: str) -> list[Located]:
        """A multi-line option (failregex): one regex per line, each with its file and line.

        A line that is a lone ``%(x)s`` or ``<x>`` is replaced by x's own lines, so an error
        points at the line that wrote the regex."""
        if name not in self.options and self.entry(name) is None:
            return []
        self.used.add(name)
        vlines: tuple[int, ...] = ()
        if name in self.options:
            text, path = self.options[name], self.path
        else:
            e = self.entry(name)
            assert e is not None
            text, path, vlines = e.value, e.path, e.value_lines
        return self._lines(text, path, vlines, 0)

    def _lines(self, text: str, path: Path, vlines: tuple[int, ...], depth: int) -> list[Located]:
        if depth > _MAX_DEPTH:
            raise FilterError(f"{path}: a substitution loop in a multi-line option")
        out: list[Located] = []
        raw_lines = [ln for ln in text.split("\n") if ln.strip()]
        for i, raw in enumerate(raw_lines):
            line = vlines[i] if i < len(vlines) else (vlines[-1] if vlines else 0)
            alone = _ALONE.match(raw)
            if alone is not None:
                ref = alone.group("pct") or alone.group("tag")
                # <tag> may itself contain a <tag> (<mdre-<mode>>): resolve the inner ones first
                ref = self.expand(ref, path, line, depth) if "<" in ref else ref
                if ref is not None and self.known(ref) and ref not in self.options:
                    e = self.entry(ref)
                    assert e is not None
                    self.used.add(ref.rpartition("/")[2])
                    out.extend(self._lines(e.value, e.path, e.value_lines, depth + 1))
                    continue
            for piece in self.expand(raw, path, line, depth).split("\n"):
                if piece.strip():
                    out.append(Located(piece.strip(), path, line))
        return out


def all_names(s: Sections) -> Iterator[str]:
    """Every option name of every section read."""
    for options in s.sections.values():
        yield from options
