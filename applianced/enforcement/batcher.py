"""The batcher: bans and unbans to the enforcer, one batch at a time, a refused batch retried.

The Appliance sends it each reactor turn's bans (and each expiry's, unban's and the cluster's
changes) and the bans of a start's restore. A batch the backend refuses whole is kept, merged
with later refusals, and sent again after 1 s, 2 s, 4 s ... up to a minute between tries;
elements the backend refuses on their own are reported and never sent again. The store already
holds the truth either way, so nothing here touches it. Its counters are the shared ``Health``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from applianced.enforcement.base import ElementsRefused, Enforcer, Restored, RowRestorer
from applianced.errors import EnforcementError
from applianced.health import Health
from applianced.rules.decision import Ban, IPNetwork
from applianced.units import plural

__all__ = ["RETRY_FIRST", "RETRY_MAX", "Batcher"]

log = Logger()

RETRY_FIRST, RETRY_MAX = 1.0, 60.0  # seconds between tries of a refused batch


class Batcher:
    """Sends batches to ``enforcer``. ``wanted(ban)``: whether a kept ban is still the active
    one when its retry comes (not lifted or expired meanwhile)."""

    def __init__(
        self,
        enforcer: Enforcer,
        clock: IReactorTime,
        health: Health,
        wanted: Callable[[Ban], bool],
    ) -> None:
        self.enforcer = enforcer
        self._clock = clock
        self._health = health
        self._wanted = wanted
        self._bans: dict[tuple[str, IPNetwork], Ban] = {}
        self._unbans: dict[tuple[str, IPNetwork], Ban] = {}
        self._retry_call: IDelayedCall | None = None
        self._retry_delay = RETRY_FIRST
        # (jail, network text) of the elements refused alone, until a ban of them is sent again:
        # the reconcile does not take their absence from the kernel for drift.
        self.refused: set[tuple[str, str]] = set()

    def send(self, bans: Sequence[Ban], unbans: Sequence[Ban]) -> bool:
        """Send one batch to the kernel; False when it was refused (it will be retried). An
        unban of a network the batch bans again is left out."""
        self._health.batches += 1
        if self.refused:
            for b in bans:
                self.refused.discard((b.jail, str(b.network)))
        if unbans:
            banned = {(b.jail, b.network) for b in bans}
            unbans = [u for u in unbans if (u.jail, u.network) not in banned]
        try:
            self.enforcer.apply(bans, unbans, self._clock.seconds())
        except ElementsRefused as e:
            self._elements_refused(e)
        except EnforcementError as e:
            self._failed(e, bans, unbans)
            return False
        return True

    def restore(
        self, track: Callable[[], list[Ban]], rows: Callable[[], list[Restored]], now: float
    ) -> list[Ban]:
        """Load a start's active bans, ``track()``'s, into the enforcer; returns them. An
        enforcer that restores from rows (nftables) loads ``rows()`` in a worker thread while
        this thread runs ``track``; either way the enforcer holds every ban when this returns,
        or its refusal is kept for retry like any refused batch."""
        enforcer = self.enforcer
        active: list[Ban] = []
        try:
            if isinstance(enforcer, RowRestorer):
                restored = rows()
                with ThreadPoolExecutor(1, "applianced-restore") as worker:  # exit joins it
                    loading = worker.submit(enforcer.restore_rows, restored, now)
                    active = track()
                loading.result()
            else:
                active = track()
                enforcer.restore(active, now)
        except ElementsRefused as e:
            self._elements_refused(e)
        except EnforcementError as e:
            self._failed(e, active, ())
        return active

    def stop(self) -> None:
        if self._retry_call is not None and self._retry_call.active():
            self._retry_call.cancel()

    def _elements_refused(self, error: ElementsRefused) -> None:
        """The backend applied the batch but for elements it refused on their own: report
        them; retrying would be refused again. The store keeps their bans."""
        self._health.refused_elements += len(error.refused)
        self._health.last_error = f"enforcement: {error}"
        self.refused.update((r.jail, r.network) for r in error.refused)
        for r in error.refused:
            log.error(
                "the {backend} backend refused the element of {network} (jail {jail}) and "
                "applied the rest of its batch; it is not sent again until the next start: "
                "{reason}",
                backend=self.enforcer.name,
                network=r.network,
                jail=r.jail,
                reason=r.reason,
            )

    def _failed(self, error: EnforcementError, bans: Sequence[Ban], unbans: Sequence[Ban]) -> None:
        """Keep the batch and retry with backoff."""
        health = self._health
        health.enforcement_errors += 1
        health.last_error = f"enforcement: {error}"
        for b in bans:
            self._bans[(b.jail, b.network)] = b
            self._unbans.pop((b.jail, b.network), None)
        for u in unbans:
            self._unbans[(u.jail, u.network)] = u
            self._bans.pop((u.jail, u.network), None)
        health.unapplied = len(self._bans) + len(self._unbans)
        log.error(
            "the {backend} backend refused a batch of {bans} and {unbans}; "
            "retrying in {delay:.0f}s: {error}",
            backend=self.enforcer.name,
            bans=plural(len(bans), "ban"),
            unbans=plural(len(unbans), "unban"),
            delay=self._retry_delay,
            error=str(error),
        )
        if self._retry_call is None or not self._retry_call.active():
            self._retry_call = self._clock.callLater(self._retry_delay, self._retry)
            self._retry_delay = min(self._retry_delay * 2, RETRY_MAX)

    def _retry(self) -> None:
        bans = [b for b in self._bans.values() if self._wanted(b)]
        unbans = list(self._unbans.values())
        self._bans, self._unbans = {}, {}
        self._health.unapplied = 0
        try:
            self.enforcer.apply(bans, unbans, self._clock.seconds())
        except ElementsRefused as e:
            self._retry_delay = RETRY_FIRST
            self._elements_refused(e)
        except EnforcementError as e:
            self._failed(e, bans, unbans)
        else:
            self._retry_delay = RETRY_FIRST
            log.info("the {backend} backend accepted the retried batch", backend=self.enforcer.name)
