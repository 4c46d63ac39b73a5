"""The change log: numbered entries, what came since a number, bounded, cleared."""

from __future__ import annotations

from applianced.changelog import ChangeLog


def test_since_returns_what_came_after_a_number() -> None:
    log: ChangeLog[str] = ChangeLog(10)
    assert log.since(0) == []
    for entry in "abc":
        log.append(entry)
    assert log.head == 3
    assert log.since(0) == ["a", "b", "c"]
    assert log.since(2) == ["c"]
    assert log.since(3) == []
    assert log.since(4) is None  # not a number this log gave


def test_a_number_that_fell_off_or_was_cleared_gets_none() -> None:
    log: ChangeLog[int] = ChangeLog(3)
    for n in range(5):
        log.append(n)
    assert log.since(1) is None
    assert log.since(2) == [2, 3, 4]
    assert log.kept() == [2, 3, 4]
    log.clear()
    assert log.since(5) is None  # up to date before the clear: resyncs all the same
    assert log.since(log.head) == []
    assert log.kept() == []
    log.append(5)
    assert log.since(log.head - 1) == [5]
