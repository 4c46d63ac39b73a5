"""Durations as operators write them (``600``, ``10m``, ``1h``, ``1d``, ``1w``) and back, and
counts as they read them (``1 ban``, ``2 bans``).

Shared by the config loader, the control socket and the CLI. Seconds are floats everywhere
inside the program.
"""

from __future__ import annotations

import math
import re

__all__ = ["MAX_BAN_SECONDS", "format_duration", "parse_ban_duration", "parse_duration", "plural"]

# The longest ban that is not permanent: nftables (1.0.6, Debian 12) refuses an element timeout
# above 99,999,999 s ("value too large"; measured in a namespace), about 165 weeks. A longer
# duration is refused where an operator writes it (config, control socket) and capped where
# the program computes it (escalation), so that no element the kernel would refuse is ever sent.
MAX_BAN_SECONDS = 99_999_999.0

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_DURATION = re.compile(r"(?P<n>\d+(?:\.\d+)?)\s*(?P<unit>[smhdw]?)")


def parse_duration(text: str | int | float) -> float:
    """Seconds in ``text``: a number of seconds, or a number with a unit s/m/h/d/w.

    Combinations such as ``1h30m`` are accepted. Raises ValueError with a message that says
    what is allowed: for anything else (a bool, a list, ...), for a negative number, and for
    infinity or NaN (TOML's ``inf``/``nan``, JSON's ``Infinity``, or digits beyond a float).
    """
    if isinstance(text, int | float) and not isinstance(text, bool):
        try:
            seconds = float(text)
        except OverflowError:  # an int beyond any float: out of bounds whatever its sign
            seconds = math.inf
        if seconds < 0:
            raise ValueError(f"{text} is negative; use 0 or more seconds, or 10m, 1h, 1d, 1w")
    elif isinstance(text, str):
        seconds = _parse_text(text)
    else:
        raise ValueError(f"{text!r} is not a duration; use seconds or 10m, 1h, 1d, 1w")
    if not math.isfinite(seconds):
        raise ValueError(f"{text!r} is not a finite duration; use seconds or 10m, 1h, 1d, 1w")
    return seconds


def parse_ban_duration(text: str | int | float, permanent: str) -> float:
    """Seconds of a ban in ``text`` (as ``parse_duration``), refused beyond MAX_BAN_SECONDS.
    ``permanent`` tells the operator how to ask for a permanent ban where the value was
    written (the config, the CLI)."""
    seconds = parse_duration(text)
    if seconds > MAX_BAN_SECONDS:
        raise ValueError(
            f"{text!r} is longer than the longest ban nftables takes, "
            f"{MAX_BAN_SECONDS:,.0f} s ({format_duration(MAX_BAN_SECONDS)}); "
            f"for a permanent ban {permanent}"
        )
    return seconds


def _parse_text(text: str) -> float:
    s = text.strip().lower()
    total = 0.0
    pos = 0
    while pos < len(s):
        m = _DURATION.match(s, pos)
        if m is None or m.end() == pos:
            raise ValueError(f"{text!r} is not a duration; use seconds or 10m, 1h, 1d, 1w")
        total += float(m["n"]) * _UNITS[m["unit"] or "s"]
        pos = m.end()
    if pos == 0:
        raise ValueError(f"{text!r} is not a duration; use seconds or 10m, 1h, 1d, 1w")
    return total


def format_duration(seconds: float | None) -> str:
    """A short human form: ``permanent``, ``45s``, ``10m``, ``1h30m``, ``2d``."""
    if seconds is None:
        return "permanent"
    left = round(seconds)
    if left <= 0:
        return "0s"
    parts = []
    for unit, size in (("w", 604800), ("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        n, left = divmod(left, size)
        if n:
            parts.append(f"{n}{unit}")
        if len(parts) == 2:
            break
    return "".join(parts)


def plural(n: int, word: str, many: str | None = None) -> str:
    """``1 ban``, ``2 bans``: ``n`` and the word in its number (``many``: an irregular one)."""
    return f"{n} {word if n == 1 else many or word + 's'}"
