"""A fail2ban jail tree read as fail2ban reads it: ``jail.conf``, ``jail.d/*.conf``,
``jail.local``, ``jail.d/*.local``, in that order (a later file overrides an earlier one), each
with its ``[INCLUDES]`` (``paths-debian.conf`` & co.), ``[DEFAULT]`` under every jail, and
``%(name)s`` resolved in the jail's own section (``%(__name__)s`` is the jail's name).

The reading is ``f2bini.py``'s, the one that reads filters. Every value keeps the file and
line that set it. Called by ``conf/f2bimport.py``; reads files, nothing else.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from applianced.conf.filterfiles.f2bini import Resolver, Sections
from applianced.errors import ApplianceError, FilterError

__all__ = ["OPTIONS", "F2bJail", "JailTree", "JailTreeError", "Value", "read_jail_tree"]

# The jail options the import reads; any other is not looked at.
OPTIONS = (
    "enabled",
    "filter",
    "maxretry",
    "findtime",
    "bantime",
    "bantime.increment",
    "bantime.factor",
    "bantime.maxtime",
    "bantime.rndtime",
    "bantime.overalljails",
    "bantime.multipliers",
    "bantime.formula",
    "ignoreip",
    "ignorecommand",
    "port",
    "protocol",
    "action",
    "destemail",
    "sender",
    "mta",
    "logpath",
    "backend",
    "journalmatch",
    "usedns",
)
_NOT_JAILS = frozenset({"DEFAULT", "INCLUDES", "Init"})


class JailTreeError(ApplianceError):
    """The directory cannot be read as a fail2ban jail tree; the message names the file."""


@dataclass(frozen=True, slots=True)
class Value:
    """One option's value in a jail, substitutions done, and where it was written (``path``
    from the tree's root)."""

    option: str
    text: str
    path: Path
    line: int

    @property
    def origin(self) -> str:
        return f"{self.option}, {self.path}:{self.line}"


@dataclass(frozen=True, slots=True)
class F2bJail:
    """A jail's options (those of OPTIONS it has), and the options that could not be resolved
    (an undefined ``%(x)s``), each with the reason."""

    name: str
    values: Mapping[str, Value]
    unresolved: Mapping[str, str]

    @property
    def enabled(self) -> bool:
        value = self.values.get("enabled")
        return value is not None and value.text.strip().lower() in ("true", "yes", "1", "on")


@dataclass(frozen=True, slots=True)
class JailTree:
    root: Path
    files: tuple[Path, ...]  # every file read, includes too, in the order read
    jails: tuple[F2bJail, ...]  # every jail, enabled or not, in the order first written


def jail_files(root: Path) -> list[Path]:
    """The files fail2ban reads for its jails, in its order; a missing one is skipped."""
    d = root / "jail.d"
    conf = sorted(d.glob("*.conf")) if d.is_dir() else []
    local = sorted(d.glob("*.local")) if d.is_dir() else []
    return [p for p in (root / "jail.conf", *conf, root / "jail.local", *local) if p.is_file()]


def read_jail_tree(root: Path) -> JailTree:
    """Every jail of the tree at ``root`` with its options resolved. Raises JailTreeError
    when the directory holds no jail file or a file cannot be read."""
    root = root.absolute()
    files = jail_files(root)
    if not files:
        raise JailTreeError(
            f"{root}: no jail.conf or jail.local here; pass the fail2ban directory "
            "(appliancectl import-fail2ban /etc/fail2ban)"
        )
    sections = Sections()
    try:
        for path in files:
            sections.read(path)
    except FilterError as e:
        raise JailTreeError(f"{e}; fix the file, or import a readable copy of the tree") from None
    names = [n for n in sections.sections if n not in _NOT_JAILS]
    return JailTree(root, tuple(sections.files), tuple(_jail(sections, n) for n in names))


def _jail(sections: Sections, name: str) -> F2bJail:
    r = Resolver(sections, {"__name__": name}, sections.files[0], section=name)
    root = sections.files[0].parent
    values: dict[str, Value] = {}
    unresolved: dict[str, str] = {}
    for option in OPTIONS:
        entry = r.entry(option)
        if entry is None:
            continue
        try:
            values[option] = Value(
                option, r.value(option).strip(), _rel(entry.path, root), entry.line
            )
        except FilterError as e:
            unresolved[option] = str(e)
    return F2bJail(name, values, unresolved)


def _rel(path: Path, root: Path) -> Path:
    """``path`` from the tree's root when it is inside (``jail.local``), else as it is."""
    return path.relative_to(root) if path.is_relative_to(root) else path
