"""Each bouncer's decision stream, pure: what ``GET /v1/decisions/stream`` answers.

``server.py`` calls ``DecisionStream.pull`` with the bouncer's name, its ``startup`` flag, its
filters and the time. The stream reads the appliance's book of active bans (``bans.BanBook``)
and its change log, and keeps each bouncer's place in that log (in memory), so a delta poll
costs the changes since the bouncer's last pull, not the number of bans.

What a bouncer receives:
- ``startup=true``, or a bouncer we hold no place for (we restarted, or it is new): every
  active ban it asks for, in ``new``. Re-adding an element a bouncer holds is harmless, so a
  restart of the appliance neither drops nor duplicates its bans.
- A delta: for each address or range that changed since its last pull, the ban on it that
  lasts longest in ``new`` (one decision per value, as CrowdSec's ``dedup``: a firewall keys
  its elements by value and gives each the timeout it was first added with), or, when no ban
  on it is left and the bouncer had one, that ban in ``deleted``.
- A bouncer whose place fell off the log (a storm of more changes between two polls than the
  log keeps) gets every active ban again in ``new``, and in ``deleted`` the bans it held that
  the log still shows ended; its own timeouts end the rest.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from applianced.bans import BanBook, Change, Key
from applianced.decisions.lapi import Filters, decision
from applianced.rules.decision import Ban, IPNetwork

__all__ = ["DecisionStream", "Full", "Response", "longest"]

Response = dict[str, list[dict[str, Any]] | None]


@dataclass(frozen=True, slots=True)
class Full:
    """A full answer, from a snapshot of the book taken at the pull: ``build`` writes it
    (about 10 us a ban), so the server may run it off the reactor thread."""

    active: list[Ban]
    deleted: list[Ban]
    filters: Filters
    now: float

    def build(self) -> Response:
        admits, now = self.filters.admits, self.now
        new = [decision(b, now) for b in longest(b for b in self.active if admits(b))]
        deleted = [decision(b, now, deleted=True) for b in self.deleted]
        return {"new": new or None, "deleted": deleted or None}


def _lasts(ban: Ban) -> float:
    return float("inf") if ban.expires_at is None else ban.expires_at


def longest(bans: Iterable[Ban]) -> list[Ban]:
    """One ban per network, the one that ends last, in order of first appearance."""
    best: dict[IPNetwork, Ban] = {}
    for ban in bans:
        held = best.get(ban.network)
        if held is None or _lasts(ban) > _lasts(held):
            best[ban.network] = ban
    return list(best.values())


class DecisionStream:
    """The bouncers' places in ``book``'s change log. ``jails`` returns the enabled jails'
    names (a network's bans are looked up in each)."""

    def __init__(self, book: BanBook, jails: Callable[[], Iterable[str]]) -> None:
        self.book = book
        self.jails = jails
        self._places: dict[str, int] = {}

    def forget(self, bouncer: str) -> None:
        """A removed bouncer's place."""
        self._places.pop(bouncer, None)

    def pull(self, bouncer: str, startup: bool, filters: Filters, now: float) -> Response | Full:
        """What ``bouncer`` gets now (a delta, or everything as a ``Full`` to build); its place
        moves to the end of the log."""
        log = self.book.changes
        place = None if startup else self._places.get(bouncer)
        changes = None if place is None else log.since(place)
        self._places[bouncer] = log.head
        if changes is not None:
            return self._delta(changes, filters, now)
        # Fell off the log: the ends it still shows of bans that were active before it.
        gone = self._ended(log.kept(), filters)[1] if place is not None else []
        return Full(list(self.book.values()), gone, filters, now)

    def _delta(self, changes: list[Change], filters: Filters, now: float) -> Response:
        changed, gone = self._ended(changes, filters)
        new = [decision(b, now) for n in changed if (b := self._best(n, filters)) is not None]
        deleted = [decision(b, now, deleted=True) for b in gone]
        return {"new": new or None, "deleted": deleted or None}

    def _ended(self, changes: list[Change], filters: Filters) -> tuple[list[IPNetwork], list[Ban]]:
        """The networks ``changes`` touch (that the bouncer asked for), and for those with no
        ban left, the last ban that ended on each, when the bouncer held one: a ban on it was
        active before ``changes``, so that ban's first change in them is its end (a start comes
        first only when none was active). A bouncer is never told to delete what it lacks."""
        seen: set[Key] = set()
        held: set[IPNetwork] = set()
        last: dict[IPNetwork, Ban] = {}
        for ban, started in changes:
            if filters.admits(ban):
                key = (ban.jail, ban.network)
                if key not in seen:
                    seen.add(key)
                    if not started:
                        held.add(ban.network)
                last[ban.network] = ban
        gone = [
            ban
            for network, ban in last.items()
            if network in held and self._best(network, filters) is None
        ]
        return list(last), gone

    def _on(self, network: IPNetwork) -> list[Ban]:
        get = self.book.get
        return [b for j in self.jails() if (b := get((j, network))) is not None]

    def _best(self, network: IPNetwork, filters: Filters) -> Ban | None:
        found = longest(b for b in self._on(network) if filters.admits(b))
        return found[0] if found else None
