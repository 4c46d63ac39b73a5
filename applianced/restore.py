"""What a start restores: the store's active bans, read and bounded for the kernel.

``Appliance.start`` calls ``restorable`` (with the collector paused by ``gc_paused``) before
the batcher loads the rows into the enforcer: the bans that expired while the appliance was
down are ended in the store, and the rest come back as rows of the enabled jails, none ending
beyond what the kernel takes.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Container, Iterator, Sequence
from contextlib import contextmanager

from twisted.logger import Logger

from applianced.rules.decision import Ban
from applianced.store.base import BanRow, OffenderStore
from applianced.units import MAX_BAN_SECONDS, plural

__all__ = ["gc_paused", "restorable"]

log = Logger()


def restorable(
    store: OffenderStore,
    jails: Container[str],
    now: float,
    end: Callable[[Sequence[Ban], float, str], None],
) -> list[BanRow]:
    """End the bans that expired by ``now`` (through ``end``, the Appliance's writes); the
    active ones of ``jails``, within the limit."""
    due = store.due_expiries(now)
    if due:
        end(due, now, "expired")
        log.info(
            "{bans} expired while the appliance was down",
            count=len(due),
            bans=plural(len(due), "ban"),
        )
    return _within_limit([r for r in store.active_rows(now) if r[0] in jails], now)


@contextmanager
def gc_paused() -> Iterator[None]:
    """Python's cyclic garbage collector off for a bulk build of long-lived objects. Restoring
    100,000 bans makes some 300,000 of them, and the collector's repeated full passes over the
    growing heap cost more than the objects: turning the 100,000 store rows into Bans took
    1.25 s with it on, 0.48 s with it off. Reference counting still frees everything; only
    cycles wait for the next collection."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _within_limit(rows: list[BanRow], now: float) -> list[BanRow]:
    """``rows`` with every ban that ends beyond what the kernel takes (stored before durations
    were bounded: 166 weeks, or endless from a JSON ``Infinity``) ending at the limit, from
    ``now``; the store keeps what it holds."""
    limit = now + MAX_BAN_SECONDS
    return [
        (jail, net, started, limit, kind, count)
        if ends is not None and ends > limit
        else (jail, net, started, ends, kind, count)
        for jail, net, started, ends, kind, count in rows
    ]
