"""Native filter files: the TOML filters shipped in ``conf/defaults/filters/`` and an
operator's own, read into a :class:`FilterDef` that :meth:`FilterDef.compile` makes a Filter.

ARCHITECTURE. The config loader (a jail's ``filter`` name or path), ``conf/edit.py`` (the shipped
names) and ``appliancectl test-filter`` call it. It reads files; the compiling and matching is
``rules/filters.py``'s, pure.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from applianced.errors import FilterError
from applianced.rules.dates import date_finder
from applianced.rules.filters import Filter

__all__ = [
    "FilterDef",
    "load_filter_def",
    "shipped_filter",
    "shipped_filter_names",
    "shipped_filters_dir",
]


@dataclass(frozen=True, slots=True)
class FilterDef:
    """A filter as written in a native TOML filter file; :meth:`compile` makes it a Filter.

    ``programs`` are app-name selectors (exact names or fnmatch globs such as ``postfix/*``)
    naming the syslog TAG/app-name that the service logs under. ``datepattern`` (fail2ban's
    date language, ``rules/dates.py``) is for services that write their own date into the
    message text: the date it finds is cut before the failregexes run.
    """

    name: str
    description: str
    programs: tuple[str, ...]
    failregex: tuple[str, ...]
    ignoreregex: tuple[str, ...]
    path: Path
    datepattern: str | None = None

    def compile(self, allow_dns: bool = False) -> Filter:
        """The compiled Filter; FilterError names this file, the regex and the reason."""
        try:
            return Filter(
                self.failregex,
                self.ignoreregex,
                allow_dns=allow_dns,
                name=self.name,
                dates=None if self.datepattern is None else date_finder(self.datepattern),
            )
        except FilterError as exc:
            raise FilterError(f"{self.path}: {exc}") from None


_KEYS = {
    "description": True,  # key -> required
    "programs": True,
    "failregex": True,
    "ignoreregex": False,
    "datepattern": False,
}
_TOML_WHERE = re.compile(r"\(at line (?P<line>\d+), column \d+\)")


def shipped_filters_dir() -> Path:
    """The directory holding the native filters shipped with applianced."""
    return Path(__file__).resolve().parent.parent / "defaults" / "filters"


def shipped_filter_names() -> list[str]:
    """The names of the shipped filters, sorted."""
    return sorted(p.stem for p in shipped_filters_dir().glob("*.toml"))


def shipped_filter(name: str) -> FilterDef:
    """The shipped filter called ``name``; FilterError listing the shipped names if unknown."""
    names = shipped_filter_names()
    if name not in names:
        raise FilterError(
            f"no shipped filter is called {name!r}; the shipped filters are: {', '.join(names)}"
        )
    return load_filter_def(shipped_filters_dir() / f"{name}.toml")


def load_filter_def(path: Path) -> FilterDef:
    """Read a native filter file. The filter's name is the file's stem.

    Raises FilterError naming the file (and the line where known) for unreadable files, bad
    TOML, unknown or missing keys and values of the wrong type. Regexes are checked by
    :meth:`FilterDef.compile`.
    """
    path = Path(path)
    text, data = _read(path)

    def fail(key: str, message: str) -> FilterError:
        line = _line_of(text, key)
        at = f":{line}" if line is not None else ""
        return FilterError(f"{path}{at}: {message}")

    for key in data:
        if key not in _KEYS:
            allowed = ", ".join(_KEYS)
            raise fail(key, f"unknown key {key!r}; a filter file has: {allowed}")
    for key, required in _KEYS.items():
        if required and key not in data:
            raise FilterError(f"{path}: missing key {key!r}")
    description = data["description"]
    if not isinstance(description, str):
        raise fail("description", "'description' must be a string")
    programs = _strings(data["programs"], "programs", fail)
    if not programs:
        raise fail("programs", "'programs' must name at least one program (app-name)")
    for p in programs:
        if not p or any(ch.isspace() for ch in p):
            raise fail("programs", f"'programs' entry {p!r} is not a program name or glob")
    failregex = _strings(data["failregex"], "failregex", fail)
    if not failregex:
        raise fail("failregex", "'failregex' must hold at least one regex")
    ignoreregex = _strings(data.get("ignoreregex", []), "ignoreregex", fail)
    datepattern = data.get("datepattern")
    if datepattern is not None:
        if not isinstance(datepattern, str):
            raise fail("datepattern", "'datepattern' must be a string")
        try:
            date_finder(datepattern)
        except FilterError as e:
            raise fail("datepattern", str(e)) from None
    return FilterDef(
        name=path.stem,
        description=description,
        programs=programs,
        failregex=failregex,
        ignoreregex=ignoreregex,
        path=path,
        datepattern=datepattern,
    )


def _read(path: Path) -> tuple[str, dict[str, Any]]:
    """The filter file's text and its TOML; FilterError naming the file (and the line of a TOML
    error) when it cannot be read or parsed."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise FilterError(f"{path}: cannot read filter file: {exc}") from None
    try:
        return text, tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        where = _TOML_WHERE.search(str(exc))
        at = f":{where.group('line')}" if where else ""
        raise FilterError(f"{path}{at}: not valid TOML: {exc}") from None


def _strings(value: object, key: str, fail: Callable[[str, str], FilterError]) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise fail(key, f"{key!r} must be a list of strings")
    return tuple(value)


def _line_of(text: str, key: str) -> int | None:
    """The 1-based line where ``key`` is assigned at the top level of a TOML text, if found."""
    found = re.search(rf"^[ \t]*[\"']?{re.escape(key)}[\"']?[ \t]*=", text, re.MULTILINE)
    return text.count("\n", 0, found.start()) + 1 if found else None
