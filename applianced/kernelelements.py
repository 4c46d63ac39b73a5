"""The kernel's elements per set for the Prometheus scrape: ``KernelElements`` lists them (as
``status`` does, about 0.9 s of CPU per 100,000 elements) in a worker thread before a scrape is
rendered, and reuses a listing while it is younger than 50 times what it cost (at most two
minutes), so the listing takes at most 2% of a core whatever the scrape interval; the scrape
says the listing's age. Built by ``service.py`` when ``[metrics] enabled = true``, registered
by ``metrics.py``'s ``make_registry``, its ``refresh`` run by ``MetricsResource``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from prometheus_client.core import GaugeMetricFamily, Metric
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure

if TYPE_CHECKING:
    from applianced.enforcement.base import Enforcer

__all__ = ["LISTING_MAX_AGE", "LISTING_SHARE", "KernelElements"]


# A listing is reused while younger than its CPU cost divided by this share (0.9 s of CPU
# for 100,000 elements: 45 s), never longer than LISTING_MAX_AGE.
LISTING_SHARE = 0.02
LISTING_MAX_AGE = 120.0


class KernelElements:
    """The elements in each of the enforcer's sets, as of the last listing: ``refresh`` runs
    one in ``in_thread`` (a worker thread in the daemon) before a scrape (``MetricsResource``)
    unless the last is young enough for what it cost; scrapes that come meanwhile wait for the
    same listing."""

    def __init__(
        self,
        enforcer: Enforcer,
        clock: IReactorTime,
        in_thread: Callable[[Callable[[], tuple[Mapping[str, int], float]]], Deferred[Any]],
    ) -> None:
        self.enforcer = enforcer
        self.clock = clock
        self.in_thread = in_thread
        self.counts: Mapping[str, int] = {}
        self.listed_at: float | None = None
        self.cost = 0.0  # CPU seconds of the last listing
        self._waiting: list[Deferred[None]] | None = None  # a listing runs

    def refresh(self) -> Deferred[None]:
        """Fires when the counts are recent enough (a failed listing: its failure)."""
        age = None if self.listed_at is None else self.clock.seconds() - self.listed_at
        if age is not None and age < min(LISTING_MAX_AGE, self.cost / LISTING_SHARE):
            return succeed(None)
        waiter = Deferred[None]()
        if self._waiting is not None:
            self._waiting.append(waiter)
        else:
            self._waiting = [waiter]
            self.in_thread(self._list).addBoth(self._listed)
        return waiter

    def _list(self) -> tuple[Mapping[str, int], float]:
        started = time.thread_time()
        counts = self.enforcer.set_counts()
        return counts, time.thread_time() - started

    def _listed(self, result: tuple[Mapping[str, int], float] | Failure) -> None:
        waiting, self._waiting = self._waiting or [], None
        if not isinstance(result, Failure):
            self.counts, self.cost = result
            self.listed_at = self.clock.seconds()
        for waiter in waiting:
            if isinstance(result, Failure):
                waiter.errback(result)
            else:
                waiter.callback(None)

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            "applianced_kernel_elements",
            "Elements in each of our nftables sets at the last listing (expired ones gone): "
            "JAIL_v4, JAIL_v6 (hosts), JAIL_p64_v6 (IPv6 /64s), JAIL_net_v4/_v6 (other "
            "networks), and JAIL_bl_* (the blacklist); none on --dry-run.",
            labels=["set"],
        )
        for name, n in sorted(self.counts.items()):
            family.add_metric([name], n)
        yield family
        if self.listed_at is not None:
            yield GaugeMetricFamily(
                "applianced_kernel_elements_age_seconds",
                "Seconds since the kernel listing that applianced_kernel_elements shows (a "
                "listing is reused while younger than 50 times its CPU cost, at most 120 s).",
                self.clock.seconds() - self.listed_at,
            )
