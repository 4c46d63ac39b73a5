"""Reading a TOML config: the typed reads of one file, whose errors name the file, the line
(when it can be found) and the key, and the value converters the tables share.

The config loader (``load.py``) and the readers of its tables (``listenerconf.py``,
``jailconf.py``, ``tables.py``) read through a ``TomlReader``; ``load.py`` collects each
table's error in ``Mistakes``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar, cast

from applianced.errors import ConfigError, ConfigErrors
from applianced.rules.addresses import parse_network
from applianced.rules.decision import IPNetwork
from applianced.units import parse_ban_duration, parse_duration

T = TypeVar("T")


class TomlReader:
    """A config file's text and path: errors that name the file, the line and the key, and
    the typed reads that raise them."""

    def __init__(self, path: Path, text: str) -> None:
        self.path = path
        self.lines = text.splitlines()

    # -- errors -----------------------------------------------------------------------------

    def error(self, keys: tuple[str | int, ...], message: str) -> ConfigError:
        return ConfigError(self.path, dotted(keys), message, self.find_line(keys))

    def find_line(self, keys: tuple[str | int, ...]) -> int | None:
        """The line where ``keys`` is set: a best effort over the text, since tomllib keeps
        no positions. Tables are tracked from their headers; array-of-tables by count."""
        *table, last = keys
        want = [k for k in table if not isinstance(k, int)]
        index = next((k for k in table if isinstance(k, int)), None)
        current: list[str] = []
        seen_array = -1
        header_line = None
        for number, raw in enumerate(self.lines, start=1):
            line = raw.strip()
            if line.startswith("["):
                is_array = line.startswith("[[")
                current = split_header(line.strip("[]").strip())
                if is_array and current == want[: len(current)]:
                    seen_array += 1
                in_table = current == want and (index is None or seen_array == index)
                if in_table:
                    header_line = number
                continue
            if current == want and (index is None or seen_array == index):
                name = line.split("=", 1)[0].strip().strip('"').strip("'")
                if "=" in line and name == str(last):
                    return number
        if header_line is None and not isinstance(last, int):
            # The key may itself be a table: [jails.NAME] or [defaults.bantime_increment].
            target = [*want, str(last)]
            for number, raw in enumerate(self.lines, start=1):
                line = raw.strip()
                header = split_header(line.strip("[]").strip())
                if line.startswith("[") and header[: len(target)] == target:
                    return number
        return header_line

    # -- typed reads ------------------------------------------------------------------------

    def table(
        self, raw: Mapping[str, Any], keys: tuple[str | int, ...], allowed: set[str]
    ) -> Mapping[str, Any]:
        value = get(raw, keys)
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise self.error(keys, "must be a table")
        for key in value:
            if key not in allowed:
                raise self.error(
                    (*keys, key),
                    f"unknown key {key!r}; allowed here: {', '.join(sorted(allowed))}",
                )
        return cast(Mapping[str, Any], value)

    def typed(self, value: Any, keys: tuple[str | int, ...], kind: type[T], what: str) -> T:
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise self.error(keys, f"must be {what}, not {value!r}")
        return value

    def convert(self, value: Any, keys: tuple[str | int, ...], fn: Callable[[Any], T]) -> T:
        try:
            return fn(value)
        except (ValueError, TypeError) as e:
            raise self.error(keys, str(e)) from None

    def choice(self, value: Any, keys: tuple[str | int, ...], allowed: tuple[str, ...]) -> Any:
        if value not in allowed:
            raise self.error(keys, f"must be one of {', '.join(map(repr, allowed))}, not {value!r}")
        return value

    def int_in(self, value: Any, keys: tuple[str | int, ...], low: int, high: int) -> int:
        n = self.typed(value, keys, int, "a whole number")
        if not low <= n <= high:
            raise self.error(keys, f"must be between {low} and {high}, not {n}")
        return n

    def strings(self, value: Any, keys: tuple[str | int, ...]) -> tuple[str, ...]:
        items = self.typed(value, keys, list, "a list of strings")
        for i, item in enumerate(items):
            self.typed(item, (*keys, i), str, "a string")
        return tuple(items)

    def networks(self, value: Any, keys: tuple[str | int, ...]) -> tuple[IPNetwork, ...]:
        return tuple(self.convert(s, keys, parse_network) for s in self.strings(value, keys))

    def path_of(self, value: Any, keys: tuple[str | int, ...]) -> Path:
        p = Path(self.typed(value, keys, str, "a path"))
        return p if p.is_absolute() else (self.path.parent / p).resolve()


def get(raw: Mapping[str, Any], keys: tuple[str | int, ...]) -> Any:
    value: Any = raw
    for k in keys:
        if isinstance(k, int):
            value = value[k] if isinstance(value, list) and k < len(value) else None
        else:
            value = value.get(k) if isinstance(value, dict) else None
        if value is None:
            return None
    return value


def dotted(keys: tuple[str | int, ...]) -> str:
    out = ""
    for k in keys:
        out += f"[{k}]" if isinstance(k, int) else (f".{k}" if out else k)
    return out


def split_header(header: str) -> list[str]:
    return [part.strip().strip('"').strip("'") for part in header.split(".")]


# Value converters: a ValueError says what is wrong; ``TomlReader.convert`` adds where.


def check_bind_address(address: str) -> None:
    from ipaddress import ip_address

    try:
        ip_address(address)
    except ValueError:
        raise ValueError(f"{address!r} is not an IP address to listen on") from None


def duration_or_zero(value: Any) -> float:
    if value == 0 and not isinstance(value, bool):
        return 0.0
    return positive_duration(value)


def factor(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 1 <= value < math.inf:
        raise ValueError(f"must be a finite number of at least 1, not {value!r}")
    return float(value)


def positive_ban_duration(value: Any) -> float:
    return positive_duration(ban_duration(value))


def ban_duration(value: Any) -> float:
    return parse_ban_duration(
        value,
        "set max_count (max_count = 1 makes every ban of the jail permanent), "
        "or blacklist one address with `appliancectl blacklist add JAIL ADDR`",
    )


def positive_duration(value: Any) -> float:
    seconds = parse_duration(value)
    if seconds <= 0:
        raise ValueError(f"must be more than 0 seconds, not {value!r}")
    return seconds


class Mistakes:
    """The errors of one file, collected table by table so that ``appliancectl check`` shows
    them all: ``with mistakes.collect():`` around the read of one table (or one jail) records a
    ConfigError and goes on with the next; ``raise_any`` ends the read."""

    def __init__(self) -> None:
        self.errors: dict[str, ConfigError] = {}  # by message: a [defaults] error once

    def add(self, error: ConfigError) -> None:
        for one in error.errors if isinstance(error, ConfigErrors) else (error,):
            self.errors.setdefault(str(one), one)

    @contextmanager
    def collect(self) -> Iterator[None]:
        try:
            yield
        except ConfigError as e:
            self.add(e)

    def raise_any(self) -> None:
        """Raise the one error as it is, or several as ConfigErrors in the file's order."""
        found = sorted(self.errors.values(), key=lambda e: math.inf if e.line is None else e.line)
        if len(found) == 1:
            raise found[0]
        if found:
            raise ConfigErrors(tuple(found))
