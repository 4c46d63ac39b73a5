"""The ban latency histogram: the one figure the appliance measures that no counter holds.

``Appliance`` feeds it once per kernel batch (plain ints, a ``bisect`` per ban, no lock: the
reactor thread is the only writer); ``metricfamilies.py`` reads it when Prometheus scrapes.
Kept apart from the metrics modules so that the daemon imports prometheus-client and
twisted.web only when ``[metrics]`` is enabled.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Sequence

from applianced.rules.decision import BanDecision

__all__ = ["BAN_LATENCY_BUCKETS", "LatencyHistogram"]

# Seconds. A ban normally reaches the kernel in the reactor turn after the deciding message
# (well under a millisecond with libnftables); a store fsync or a storm's batch moves it into the
# milliseconds; anything near a second means the reactor was stuck.
BAN_LATENCY_BUCKETS: tuple[float, ...] = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
)


class LatencyHistogram:
    """A histogram of seconds with fixed upper bounds (plus +Inf), in plain ints: the reactor
    thread is the only writer, and a scrape only reads."""

    __slots__ = ("bounds", "count", "counts", "sum")

    def __init__(self, bounds: Sequence[float] = BAN_LATENCY_BUCKETS) -> None:
        self.bounds = tuple(sorted(bounds))
        self.counts = [0] * (len(self.bounds) + 1)  # the last one is +Inf
        self.count = 0
        self.sum = 0.0

    def observe(self, seconds: float) -> None:
        seconds = max(0.0, seconds)  # a clock stepped back must not make a negative latency
        # bisect_left: a value equal to a bound belongs in that bound's bucket (le = "<=").
        self.counts[bisect_left(self.bounds, seconds)] += 1
        self.count += 1
        self.sum += seconds

    def observe_bans(self, now: float, decisions: Iterable[BanDecision]) -> None:
        """One sample per ban: ``now`` (the kernel batch returned) minus the receipt time of the
        message that decided it (``BanDecision.at``), both in seconds on the reactor clock."""
        for d in decisions:
            self.observe(now - d.at)

    def cumulative(self) -> list[tuple[float, int]]:
        """``(upper bound, count)`` pairs, cumulative as Prometheus wants them, ending with
        ``inf``."""
        out: list[tuple[float, int]] = []
        running = 0
        for bound, n in zip((*self.bounds, float("inf")), self.counts, strict=True):
            running += n
            out.append((bound, running))
        return out
