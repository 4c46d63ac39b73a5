"""The Appliance's writes to the offenders store, in order, and what happens when the store
refuses them (a full disk, a read-only filesystem).

The Appliance records bans and their ends through ``StoreWrites``. A write the store refuses is
kept in memory with every write after it (in order: a ban's end never lands before the ban),
and retried after 1 s, 2 s, 4 s ... up to a minute; the bans stay enforced meanwhile. At most
``limit`` rows wait: beyond, the oldest are dropped (counted; the kernel still holds their
bans, and the next start adopts what the store lacks, ``recovery.py``, and ends what expired),
never the end of an unban or a flush, which the next start would undo: those wait, the rows
after them are dropped. The failure is logged
once, and once when writes resume; ``Health`` counts it for status and the metrics.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from applianced.errors import StoreError
from applianced.health import Health
from applianced.rules.decision import Ban, BanDecision
from applianced.store.base import OffenderStore

__all__ = ["PENDING_LIMIT", "RETRY_FIRST", "RETRY_MAX", "StoreWrites"]

log = Logger()

PENDING_LIMIT = 100_000  # rows (bans and ends) kept in memory while the store refuses writes
RETRY_FIRST, RETRY_MAX = 1.0, 60.0  # seconds between tries


class StoreWrites:
    """Writes ``store`` in order; a refused write waits, with the ones after it, for a retry."""

    def __init__(
        self,
        store: OffenderStore,
        clock: IReactorTime,
        health: Health,
        limit: int = PENDING_LIMIT,
    ) -> None:
        self._store = store
        self._clock = clock
        self._health = health
        self._limit = limit
        # (write, rows, whether the bound may drop it), oldest first
        self._pending: deque[tuple[Callable[[], object], int, bool]] = deque()
        self._retry_call: IDelayedCall | None = None
        self._retry_delay = RETRY_FIRST
        self._stopped = False

    def record(self, decisions: Sequence[BanDecision], share: bool = True) -> None:
        if decisions:
            self._write(
                lambda: self._store.record_bans(decisions, share=share),
                len(decisions),
                droppable=True,  # the next start adopts its bans from the kernel
            )

    def end(self, bans: Sequence[Ban], at: float, reason: str, share: bool = True) -> None:
        if bans:
            self._write(
                lambda: self._store.end_bans(bans, at, reason, share=share),
                len(bans),
                droppable=reason == "expired",  # the next start ends them again
            )

    def stop(self) -> None:
        """A last try of what waits; what the store still refuses is lost with the process
        (the next start adopts the kernel's bans the store lacks)."""
        if self._retry_call is not None and self._retry_call.active():
            self._retry_call.cancel()
        self._stopped = True  # a refusal now schedules no retry
        if self._pending and not self._drain():
            lifted = sum(rows for _, rows, droppable in self._pending if not droppable)
            log.error(
                "{rows} rows were never written to the offenders store; the next start adopts "
                "their bans from the kernel{undone}",
                rows=self._health.store_pending,
                undone=f", and restores {lifted} bans unbanned or flushed meanwhile: unban "
                "them again"
                if lifted
                else "",
            )

    def _write(self, write: Callable[[], object], rows: int, droppable: bool) -> None:
        self._pending.append((write, rows, droppable))
        self._health.store_pending += rows
        if len(self._pending) == 1:
            self._drain()
        else:
            self._bound()

    def _drain(self) -> bool:
        """Write what waits, oldest first; False (and a retry scheduled) at the first refusal."""
        health = self._health
        written = 0
        while self._pending:
            write, rows, _ = self._pending[0]
            try:
                write()
            except StoreError as e:
                self._failed(e)
                return False
            self._pending.popleft()
            health.store_pending -= rows
            written += rows
        if health.store_failing:
            health.store_failing = False
            self._retry_delay = RETRY_FIRST
            log.info(
                "the offenders store accepts writes again; {rows} waiting rows written",
                rows=written,
            )
        return True

    def _failed(self, error: StoreError) -> None:
        health = self._health
        health.store_errors += 1
        health.last_error = f"store: {error}"
        if not health.store_failing:
            health.store_failing = True
            log.error(
                "the offenders store refused a write; bans are still enforced, and the rows "
                "wait in memory (at most {limit}), retried until it accepts them: {error}",
                limit=self._limit,
                error=str(error),
            )
        self._bound()
        if self._stopped:
            return
        if self._retry_call is None or not self._retry_call.active():
            self._retry_call = self._clock.callLater(self._retry_delay, self._drain)
            self._retry_delay = min(self._retry_delay * 2, RETRY_MAX)

    def _bound(self) -> None:
        """Drop the oldest droppable waiting writes beyond the limit (never the newest: the one
        being retried when it is all there is). Few writes are not droppable (an operator's
        unbans and flushes): the first droppable one is found at once."""
        health, pending = self._health, self._pending
        dropped = 0
        while health.store_pending > self._limit:
            at = next((i for i, item in enumerate(pending) if item[2]), len(pending))
            if at >= len(pending) - 1:
                break
            rows = pending[at][1]
            del pending[at]
            health.store_pending -= rows
            dropped += rows
        if dropped:
            health.store_dropped += dropped
            log.error(
                "{rows} rows waiting for the offenders store were dropped (more than {limit} "
                "waited); their bans stay enforced, and the next start adopts them from the "
                "kernel",
                rows=dropped,
                limit=self._limit,
            )
