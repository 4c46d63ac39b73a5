"""What ``appliancectl jail get`` shows: each option of a jail as the config file sets it, and
where the value comes from (the jail's table, ``[defaults]`` or the built-in default). Read
with tomllib alone, not the loader, so that a file the loader refuses can still be looked
at (``appliancectl check`` says what is wrong). Called by ``cli/edits.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from applianced.conf.jailconf import BUILTIN_POLICY
from applianced.conf.jailkeys import JAIL_OPTIONS, POLICY_KEYS
from applianced.conf.paths import read_toml
from applianced.errors import ApplianceError

__all__ = ["JailValue", "NoSuchJailError", "jail_values"]


class NoSuchJailError(ApplianceError):
    """The config file has no table for that jail."""


@dataclass(frozen=True, slots=True)
class JailValue:
    """An option's value (None: not set, a filter's regexes then) and where it comes from:
    ``jails.NAME``, ``defaults``, ``built-in`` or ``unset``."""

    value: Any
    source: str


def jail_values(path: Path, jail: str) -> dict[str, JailValue]:
    """Every option of jail ``jail`` in the file at ``path``, in JAIL_OPTIONS' order."""
    raw = read_toml(path)
    jails = _table(raw, "jails")
    own = _table(jails, jail)
    if jail not in jails:
        raise NoSuchJailError(f"no jail {jail!r} in {path} (jails: {', '.join(jails) or 'none'})")
    layers = (
        (own, f"jails.{jail}"),
        ({k: v for k, v in _table(raw, "defaults").items() if k in POLICY_KEYS}, "defaults"),
        (BUILTIN_POLICY, "built-in"),
        ({"enabled": True}, "built-in"),
    )
    return {option: _lookup(option, layers) for option in JAIL_OPTIONS}


def _lookup(option: str, layers: tuple[tuple[dict[str, Any], str], ...]) -> JailValue:
    head, _, sub = option.partition(".")
    for table, source in layers:
        value = _table(table, head).get(sub) if sub else table.get(option)
        if value is not None:
            return JailValue(value, source)
    return JailValue(None, "unset")


def _table(raw: dict[str, Any], key: str) -> dict[str, Any]:
    value = raw.get(key)
    return value if isinstance(value, dict) else {}
