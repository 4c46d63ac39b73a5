"""The expiry timer on a task.Clock: one call at the soonest end, moved earlier, never later."""

from __future__ import annotations

from twisted.internet.task import Clock

from applianced.expiry import ExpiryTimer


class Ends:
    """A stand-in for the book: the pending ends, and what each call of ``expire`` saw."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.ends: list[float] = []
        self.fired: list[float] = []

    def next_expiry(self) -> float | None:
        return min(self.ends, default=None)

    def expire(self) -> None:
        now = self.clock.seconds()
        self.fired.append(now)
        self.ends = [e for e in self.ends if e > now]


def timer(start: float = 100.0) -> tuple[ExpiryTimer, Ends, Clock]:
    clock = Clock()
    clock.advance(start)
    ends = Ends(clock)
    return ExpiryTimer(clock, ends.next_expiry, ends.expire), ends, clock


def test_nothing_to_expire_schedules_nothing() -> None:
    expiry, _, clock = timer()
    expiry.schedule()
    assert clock.getDelayedCalls() == []


def test_fires_at_the_soonest_end_then_schedules_the_next() -> None:
    expiry, ends, clock = timer()
    ends.ends = [130.0, 110.0]
    expiry.schedule()
    clock.advance(9.9)
    assert ends.fired == []
    clock.advance(0.1)
    assert ends.fired == [110.0]
    assert [c.getTime() for c in clock.getDelayedCalls()] == [130.0]
    clock.advance(20)
    assert ends.fired == [110.0, 130.0]
    assert clock.getDelayedCalls() == []


def test_a_sooner_end_moves_the_call_earlier_a_later_one_keeps_it() -> None:
    expiry, ends, clock = timer()
    ends.ends = [150.0]
    expiry.schedule()
    ends.ends.append(120.0)
    expiry.schedule()
    assert [c.getTime() for c in clock.getDelayedCalls()] == [120.0]
    ends.ends.append(140.0)  # the soonest is still 120: the call stays
    expiry.schedule()
    assert [c.getTime() for c in clock.getDelayedCalls()] == [120.0]


def test_an_end_in_the_past_fires_at_once() -> None:
    expiry, ends, clock = timer()
    ends.ends = [90.0]
    expiry.schedule()
    clock.advance(0)
    assert ends.fired == [100.0]


def test_stop_cancels_the_pending_call() -> None:
    expiry, ends, clock = timer()
    ends.ends = [110.0]
    expiry.schedule()
    expiry.stop()
    assert clock.getDelayedCalls() == []
    clock.advance(20)
    assert ends.fired == []
