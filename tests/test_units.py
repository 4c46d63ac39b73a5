"""Durations as operators write them."""

from __future__ import annotations

import pytest

from applianced.units import format_duration, parse_duration, plural


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("600", 600),
        (600, 600),
        ("10m", 600),
        ("1h", 3600),
        ("1d", 86400),
        ("1w", 604800),
        ("1h30m", 5400),
        (" 2d ", 172800),
        ("1.5h", 5400),
        ("0", 0),
    ],
)
def test_parse_duration_accepts_the_documented_forms(text: str | int, seconds: float) -> None:
    """600, 10m, 1h, 1d, 1w (and combinations) are seconds."""
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "ten", "10x", "-5", "1h-", True, -1])
def test_parse_duration_rejects_nonsense_with_a_hint(text: str | int) -> None:
    """Anything else is a ValueError that shows the allowed forms."""
    with pytest.raises(ValueError, match="10m, 1h"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(None, "permanent"), (0, "0s"), (45, "45s"), (600, "10m"), (5400, "1h30m"), (90061, "1d1h")],
)
def test_format_duration_is_short(seconds: float | None, text: str) -> None:
    """Human durations keep the two largest units."""
    assert format_duration(seconds) == text


@pytest.mark.parametrize(
    ("n", "text"), [(0, "0 bans"), (1, "1 ban"), (2, "2 bans"), (1_000, "1000 bans")]
)
def test_plural(n: int, text: str) -> None:
    assert plural(n, "ban") == text


def test_plural_irregular() -> None:
    assert (plural(1, "more ban", "more bans"), plural(3, "entry", "entries")) == (
        "1 more ban",
        "3 entries",
    )
