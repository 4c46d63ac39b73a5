"""Durations as operators write them (``600``, ``10m``, ``1h``, ``1d``, ``1w``) and back.

Shared by the config loader and the CLI. Seconds are floats everywhere inside the program.
"""

from __future__ import annotations

import re

__all__ = ["MAX_BAN_SECONDS", "format_duration", "parse_duration"]

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
    what is allowed.
    """
    if isinstance(text, bool):
        raise ValueError(f"{text!r} is not a duration; use seconds or 10m, 1h, 1d, 1w")
    if isinstance(text, int | float):
        if text < 0:
            raise ValueError(f"{text} is negative; use 0 or more seconds, or 10m, 1h, 1d, 1w")
        return float(text)
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
