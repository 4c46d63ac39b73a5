"""FoundLines: the optional `found` lines, one per failure, a storm's within the budget."""

from __future__ import annotations

from ipaddress import ip_address

from twisted.internet.task import Clock
from twisted.logger import capturedLogs, formatEvent

from applianced.foundlines import FOUND_PER_SECOND, FoundLines
from applianced.rules.decision import Found

NOW = 1_800_000_000.0


def found(i: int, line: str = "mx postfix/smtpd[9]: warning: SASL LOGIN failed") -> Found:
    return Found("postfix-sasl", ip_address(f"203.0.113.{i}"), "192.0.2.10", line)


def test_a_found_line_names_jail_address_sender_and_line() -> None:
    with capturedLogs() as events:
        FoundLines(Clock()).found(found(7, "mx x\n[forged]"), NOW)
    assert [formatEvent(e) for e in events] == [
        'found postfix-sasl 203.0.113.7; sender 192.0.2.10: "mx x\\x0a[forged]"'
    ]
    assert events[0]["log_namespace"] == "applianced.found"


def test_a_storm_of_failures_is_summarised_once_a_second() -> None:
    clock = Clock()
    clock.advance(NOW)
    lines = FoundLines(clock)
    with capturedLogs() as events:
        for i in range(FOUND_PER_SECOND + 30):
            lines.found(found(i % 250), NOW)
        clock.advance(1)
        lines.found(found(1), NOW + 1)
        lines.close()
    texts = [formatEvent(e) for e in events]
    assert len(texts) == FOUND_PER_SECOND + 2
    assert texts[FOUND_PER_SECOND] == (
        "... and 30 more failures found in the last second, not logged one by one"
    )
    assert texts[-1].startswith("found postfix-sasl 203.0.113.1;")
