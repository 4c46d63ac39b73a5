"""BanLines: the log's ban and unban lines, a storm's within the per-second budget, in the
namespace the journal has always shown (the Appliance's storms: tests/test_appliance.py)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from ipaddress import ip_network
from typing import Any

from twisted.internet.task import Clock
from twisted.logger import capturedLogs, formatEvent

from applianced.banlines import BANS_PER_SECOND, BanLines
from applianced.rules.decision import Ban, BanKind

NOW = 1_800_000_000.0


def ban(i: int, expires: float | None = NOW + 600) -> Ban:
    return Ban("sshd", ip_network(f"203.0.113.{i}/32"), NOW, expires, BanKind.AUTO, 1)


@contextmanager
def lines() -> Iterator[tuple[BanLines, Clock, list[str]]]:
    clock = Clock()
    clock.advance(NOW)
    texts: list[str] = []
    with capturedLogs() as events:
        yield BanLines(clock), clock, texts
    texts.extend(formatEvent(e) for e in events if _ours(e))


def _ours(event: dict[str, Any]) -> bool:
    return event.get("log_namespace") == "applianced.appliance"


LINE = "[192.0.2.10] mx sshd[7]: Failed password for root from 203.0.113.1 port 22 ssh2"


def test_a_ban_line_names_jail_network_duration_kind_count_sender_and_line() -> None:
    with lines() as (banlines, _, texts):
        banlines.banned([ban(1)], [LINE], NOW, budgeted=True)
    assert texts == [
        "ban sshd 203.0.113.1/32 for 10m (auto, ban #1); sender 192.0.2.10: "
        '"mx sshd[7]: Failed password for root from 203.0.113.1 port 22 ssh2"'
    ]


def test_the_deciding_line_is_escaped_and_bounded() -> None:
    """A forged newline cannot start a line of its own; a long line is cut, the cut said."""
    forged = "[192.0.2.10] mx sshd[7]: x\nban sshd 198.51.100.1/32\x1b[2J" + "y" * 400
    with lines() as (banlines, _, texts):
        banlines.banned([ban(1)], [forged], NOW, budgeted=True)
    (text,) = texts
    assert "\n" not in text and "\x1b" not in text
    assert "x\\x0aban sshd 198.51.100.1/32\\x1b[2J" in text
    assert text.endswith('... (142 more chars)"')


def test_a_ban_without_a_kept_line_says_so() -> None:
    """A failure recalled from an eviction has no sender; an operator's ban names appliancectl."""
    with lines() as (banlines, _, texts):
        banlines.banned([ban(1), ban(2)], ["(line not kept)", "[appliancectl] manual ban"], NOW,
                        budgeted=False)  # fmt: skip
    assert texts[0].endswith('; sender unknown: "(line not kept)"')
    assert texts[1].endswith('; sender appliancectl: "manual ban"')


def test_a_storm_is_budgeted_an_operators_bans_are_not() -> None:
    with lines() as (banlines, clock, texts):
        banlines.banned(
            [ban(i) for i in range(BANS_PER_SECOND + 5)], [LINE] * 25, NOW, budgeted=True
        )
        banlines.banned([ban(200)], [LINE], NOW, budgeted=False)
        clock.advance(1)
    assert len(texts) == BANS_PER_SECOND + 2
    assert texts[-2].startswith("ban sshd 203.0.113.200/32 ")
    assert texts[-1].startswith("... and 5 more bans in the last second")


def test_cluster_lines_and_unban_lines() -> None:
    with lines() as (banlines, _, texts):
        banlines.adopted([ban(1)], [ban(2)], NOW)
        banlines.ended([ban(3)], "expired")
    assert texts == [
        "ban sshd 203.0.113.1/32 from the cluster (auto, ban #1)",
        "unban sshd 203.0.113.2/32 (from the cluster)",
        "unban sshd 203.0.113.3/32 (expired)",
    ]


def test_close_summarises_what_is_still_counted() -> None:
    with lines() as (banlines, _, texts):
        banlines.banned(
            [ban(i) for i in range(BANS_PER_SECOND + 1)], [LINE] * 21, NOW, budgeted=True
        )
        banlines.close()
    assert texts[-1].startswith("... and 1 more ban in the last second")


def test_unban_lines_share_the_budget() -> None:
    """A cluster flush (or a mass expiry) of many bans: the unban lines are counted against the
    same budget as the ban lines, the rest summarised; an operator's unban is always logged."""
    n = BANS_PER_SECOND * 400
    with lines() as (banlines, clock, texts):
        banlines.banned([ban(1)], [LINE], NOW, budgeted=True)
        banlines.adopted([], [ban(i % 250) for i in range(n)], NOW)
        banlines.ended([ban(i % 250) for i in range(10)], "expired")
        banlines.ended([ban(7)], "unban")
        clock.advance(1)
    assert len(texts) == BANS_PER_SECOND + 2
    assert texts[-2] == "unban sshd 203.0.113.7/32 (unban)"
    assert texts[-1].startswith(f"... and {n + 10 - BANS_PER_SECOND + 1} more unbans in the last")
