"""The periodic reconcile: the kernel's sets checked against the book of active bans, and
repaired when another tool changed them (``nft flush set``, a ruleset flush that deleted our
table).

The Appliance owns one; it runs every ``[enforcement] reconcile_interval`` seconds and at each
reload. Cheap first: the enforcer's element counts per jail (a listing, in a worker thread
through ``in_thread``) against the book's; only when they differ, the kernel's elements
themselves (``drift``, pure) against the book. A ban the kernel lacks, or an element no ban
accounts for, is repaired by setting the table up again and restoring the book into it; each
repair is counted in ``Health`` and logged once. Bans that end within ``SLACK`` seconds, and
bans changed while the kernel was being read, are left to the next round. The repair itself
runs on the reactor thread, as a start's restore does (about 1 s for 100,000 bans); it is rare.
"""

from __future__ import annotations

from collections.abc import Callable, Container, Iterable, Mapping, Sequence
from ipaddress import ip_network
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from applianced.bans import Key
from applianced.enforcement.base import Element, Enforcer
from applianced.errors import EnforcementError
from applianced.health import Health
from applianced.rules.decision import Ban

__all__ = ["SLACK", "InThread", "Reconciler", "drift"]

log = Logger()

SLACK = 2.0  # seconds: a ban ending this soon may be gone from the kernel already
InThread = Callable[[Callable[[], Any]], Deferred[Any]]


def drift(
    bans: Mapping[Key, Ban], elements: Iterable[Element], now: float
) -> tuple[list[Ban], list[Element]]:
    """``(missing, unknown)``: the bans (not ending within SLACK) that no element holds, and
    the elements (not ending within SLACK) that no ban accounts for. A prefix ban counts as
    held when an element lies inside it (nested prefix bans are held as pieces)."""
    held: set[Key] = set()
    unknown = []
    prefixes = [b for b in bans.values() if b.network.prefixlen < b.network.max_prefixlen]
    for e in elements:
        network = ip_network(e.network)
        key = (e.jail, network)
        if key in bans:
            held.add(key)
            continue
        inside = [
            b
            for b in prefixes
            if b.jail == e.jail
            and b.network.version == network.version
            and network.subnet_of(b.network)  # type: ignore[arg-type]
        ]
        held.update((b.jail, b.network) for b in inside)
        if not inside and (e.expires_at is None or e.expires_at > now + SLACK):
            unknown.append(e)
    missing = [
        b
        for k, b in bans.items()
        if k not in held and (b.expires_at is None or b.expires_at > now + SLACK)
    ]
    return missing, unknown


class Reconciler:
    """Checks every ``interval`` seconds (0: only when asked by ``check``). ``book``: the
    active bans; ``repair``: sets the table up again and restores the book into it;
    ``refused``: (jail, network text) of the elements the kernel refused on their own."""

    def __init__(
        self,
        clock: IReactorTime,
        enforcer: Enforcer,
        book: Mapping[Key, Ban],
        repair: Callable[[], None],
        refused: Container[tuple[str, str]],
        health: Health,
        interval: float,
        in_thread: InThread | None = None,
    ) -> None:
        self._clock = clock
        self._enforcer = enforcer
        self._book = book
        self._repair = repair
        self._refused = refused
        self._health = health
        self.interval = interval
        self._in_thread = in_thread or (lambda fn: succeed(fn()))
        self._call: IDelayedCall | None = None
        self._running = False
        self._failing = False

    def start(self) -> None:
        self._schedule()

    def stop(self) -> None:
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None

    def _schedule(self) -> None:
        self.stop()
        if self.interval > 0:
            self._call = self._clock.callLater(self.interval, self._tick)

    def _tick(self) -> None:
        self._call = None
        self.check().addBoth(lambda _: self._schedule())

    def check(self) -> Deferred[None]:
        """One round: counts, then, when they differ, the elements; a repair if needed."""
        if self._running or self._health.unapplied:  # a refused batch waits for its retry
            return succeed(None)
        self._running = True
        snapshot = dict(self._book)
        d: Deferred[Any] = self._in_thread(self._enforcer.counts)
        d.addCallbacks(self._counted, self._unlisted, callbackArgs=(snapshot,))
        d.addCallbacks(self._done, self._failed)
        return d

    def _unlisted(self, failure: Failure) -> Failure | None:
        """The kernel cannot list our table: most often it is gone (``nft flush ruleset``).
        Set it up again; a repair that fails too is reported by ``_failed``."""
        if not isinstance(failure.value, EnforcementError):
            return failure
        self._repaired(list(self._book.values()), [], "the table could not be listed")
        return None

    def _counted(self, counts: Mapping[str, int], snapshot: dict[Key, Ban]) -> Any:
        expected: dict[str, int] = dict.fromkeys(counts, 0)
        for jail, _ in snapshot:
            expected[jail] = expected.get(jail, 0) + 1
        if dict(counts) == expected:
            return
        now = self._clock.seconds()
        d: Deferred[Any] = self._in_thread(lambda: self._enforcer.elements(now))
        return d.addCallback(self._compare, snapshot, now)

    def _compare(self, elements: Sequence[Element], snapshot: dict[Key, Ban], now: float) -> None:
        # Only bans that were active before the listing and still are: a change made while
        # the kernel was read is not drift.
        book = self._book
        # Nor is an element the kernel refused on its own (the batcher reported it).
        refused = self._refused
        steady = {
            k: b
            for k, b in snapshot.items()
            if book.get(k) is b and (k[0], str(k[1])) not in refused
        }
        missing, unknown = drift(steady, elements, now)
        unknown = [e for e in unknown if (e.jail, ip_network(e.network)) not in book]
        if missing or unknown:
            self._repaired(missing, unknown, "another tool flushed or changed them")

    def _repaired(self, missing: Sequence[Ban], unknown: Sequence[Element], why: str) -> None:
        self._repair()
        health = self._health
        health.reconcile_repairs += 1
        health.reconcile_missing += len(missing)
        health.reconcile_unknown += len(unknown)
        jails = sorted({b.jail for b in missing} | {e.jail for e in unknown})
        log.warn(
            "the kernel's sets had drifted from the active bans ({missing} bans missing, "
            "{unknown} elements no ban accounts for, jails {jails}): {why}; set up and "
            "restored",
            missing=len(missing),
            unknown=len(unknown),
            jails=", ".join(jails) or "none",
            why=why,
        )

    def _done(self, _: object) -> None:
        self._running = False
        if self._failing:
            self._failing = False
            log.info("the reconcile of the kernel's sets works again")

    def _failed(self, failure: Failure) -> None:
        """Logged once until a round succeeds again."""
        self._running = False
        if not self._failing:
            self._failing = True
            log.error(
                "the reconcile of the kernel's sets failed; it is tried every {interval:.0f}s "
                "and logged again once it works: {error}",
                interval=self.interval,
                error=failure.getErrorMessage(),
            )
