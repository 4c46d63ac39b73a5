"""The book of active bans: one ban per (jail, network), and the heap of their expiries.

The Appliance keeps it: it adds what it enforces, lifts what the operator or the cluster ends,
asks it which bans are due, which of a turn's offences are not banned yet and which bans an
unban covers. It holds no clock and no I/O; the caller passes the time and
schedules the next expiry from ``next_expiry``. The control views and the stats read it; the
decision stream (``decisions/stream.py``) reads it and its ``changes``: every ban that starts
or ends here, in order, so that a bouncer's delta poll costs the changes, not the bans.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Container, Iterable, Iterator, Mapping

from applianced.changelog import ChangeLog
from applianced.rules.decision import Ban, IPNetwork, Offence

__all__ = ["CHANGES_KEPT", "BanBook", "Change", "Key"]

Key = tuple[str, IPNetwork]
# A ban that started (True) or ended (False).
Change = tuple[Ban, bool]
# The changes kept for the decision stream's delta polls (about 100 bytes each): a bouncer that
# polls every 10 s falls behind only in a storm of 6,500 bans a second, and then resyncs.
CHANGES_KEPT = 65_536


class BanBook(Mapping[Key, Ban]):
    """The active bans by (jail, network). A lifted or replaced ban leaves its heap entry
    behind; ``due`` skips an entry whose ban is no longer the one that ends then."""

    def __init__(self) -> None:
        self._active: dict[Key, Ban] = {}
        # (expiry, sequence, key): the sequence breaks ties so networks are never compared.
        self._expiries: list[tuple[float, int, Key]] = []
        self._sequence = itertools.count()
        self.changes: ChangeLog[Change] = ChangeLog(CHANGES_KEPT)

    def __getitem__(self, key: Key) -> Ban:
        return self._active[key]

    def __iter__(self) -> Iterator[Key]:
        return iter(self._active)

    def __len__(self) -> int:
        return len(self._active)

    # Mapping's own __contains__ and get go through __getitem__ and a KeyError: a storm's
    # turn asks them once per offence, so they ask the dict.
    def __contains__(self, key: object) -> bool:
        return key in self._active

    def get(self, key: Key, default: Ban | None = None) -> Ban | None:  # type: ignore[override]
        return self._active.get(key, default)

    def reset(self, bans: Iterable[Ban]) -> None:
        """Hold exactly ``bans`` (a start's restore); the change log starts over."""
        self._active = {(b.jail, b.network): b for b in bans}
        self.changes.clear()
        self._expiries = [
            (b.expires_at, next(self._sequence), key)
            for key, b in self._active.items()
            if b.expires_at is not None
        ]
        heapq.heapify(self._expiries)

    def add(self, bans: Iterable[Ban]) -> None:
        """Make each of ``bans`` the active one of its jail and network (replacing any)."""
        active, expiries, sequence = self._active, self._expiries, self._sequence
        record = self.changes.append
        for ban in bans:
            key = (ban.jail, ban.network)
            replaced = active.get(key)
            if replaced is not None:
                record((replaced, False))
            active[key] = ban
            record((ban, True))
            if ban.expires_at is not None:
                heapq.heappush(expiries, (ban.expires_at, next(sequence), key))

    def lift(self, bans: Iterable[Ban]) -> None:
        """Remove ``bans`` (each must be active)."""
        for ban in bans:
            del self._active[(ban.jail, ban.network)]
            self.changes.append((ban, False))

    def keep_jails(self, jails: Iterable[str]) -> None:
        """Forget the bans of every jail not in ``jails`` (a reload removed it)."""
        kept = set(jails)
        for key, ban in self._active.items():
            if key[0] not in kept:
                self.changes.append((ban, False))
        self._active = {k: b for k, b in self._active.items() if k[0] in kept}

    def due(self, now: float) -> list[Ban]:
        """Remove and return the bans that end at or before ``now``."""
        due: list[Ban] = []
        expiries, active = self._expiries, self._active
        while expiries and expiries[0][0] <= now:
            at, _, key = heapq.heappop(expiries)
            ban = active.get(key)
            if ban is not None and ban.expires_at == at:
                due.append(active.pop(key))
                self.changes.append((ban, False))
        return due

    def next_expiry(self) -> float | None:
        """When the earliest entry of the heap is due (maybe a lifted ban's), or None."""
        return self._expiries[0][0] if self._expiries else None

    def of_jail(self, jail: str | None) -> list[Ban]:
        """The active bans of ``jail`` (or of every jail)."""
        return [b for (j, _), b in self._active.items() if jail is None or j == jail]

    def overlapping(self, network: IPNetwork, jail: str | None, permanent_only: bool) -> list[Ban]:
        """The active bans of ``jail`` (or of every jail) whose network overlaps ``network``;
        ``permanent_only``: the blacklist's only."""
        return [
            b
            for (j, net), b in self._active.items()
            if (jail is None or j == jail)
            and net.version == network.version
            and net.overlaps(network)
            and (not permanent_only or b.permanent)
        ]

    def unbanned(
        self, offences: Iterable[Offence], jails: Container[str]
    ) -> tuple[dict[str, list[Offence]], int]:
        """A turn's offences still to decide, by jail in order of arrival: the first of each
        (jail, network) of an enabled jail that is not banned already; and how many others
        were skipped."""
        fresh: dict[Key, Offence] = {}
        skipped = 0
        active = self._active
        for offence in offences:
            key = (offence.jail, offence.network)
            if (
                key in active
                or offence.jail not in jails
                or fresh.setdefault(key, offence) is not offence
            ):
                skipped += 1
        by_jail: dict[str, list[Offence]] = {}
        for offence in fresh.values():
            by_jail.setdefault(offence.jail, []).append(offence)
        return by_jail, skipped
