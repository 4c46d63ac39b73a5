"""An in-memory Enforcer: for unit tests and ``--dry-run``. It enforces nothing."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from applianced.enforcement.base import Element, JailRules
from applianced.rules.decision import Ban, IPNetwork

__all__ = ["MemoryEnforcer"]


class MemoryEnforcer:
    """Keeps bans in a dict keyed by (jail, network). ``transactions`` counts apply calls, so
    tests can check that one reactor turn made one batch."""

    name = "memory"

    def __init__(self) -> None:
        self.jails: dict[str, JailRules] = {}
        self.bans: dict[tuple[str, IPNetwork], Ban] = {}
        self.transactions = 0

    def setup(self, jails: Sequence[JailRules]) -> None:
        self.jails = {j.name: j for j in jails}
        self.bans = {k: b for k, b in self.bans.items() if k[0] in self.jails}

    def apply(self, bans: Sequence[Ban], unbans: Sequence[Ban], now: float) -> None:
        self.transactions += 1
        for ban in unbans:
            self.bans.pop((ban.jail, ban.network), None)
        for ban in bans:
            if ban.jail in self.jails:
                self.bans[(ban.jail, ban.network)] = ban

    def restore(self, active: Sequence[Ban], now: float) -> None:
        self.bans = {}
        self.apply(active, (), now)

    def elements(self, now: float) -> list[Element]:
        return [
            Element(j, str(n), b.expires_at, None if b.permanent else b.started_at)
            for (j, n), b in list(self.bans.items())
            if b.expires_at is None or b.expires_at > now
        ]

    def counts(self) -> Mapping[str, int]:
        out = dict.fromkeys(self.jails, 0)
        for jail, _ in list(self.bans):  # a copy: counts may run in a worker thread
            out[jail] += 1
        return out

    def set_counts(self) -> Mapping[str, int]:
        return {}  # no kernel set holds anything

    def flush(self) -> None:
        self.bans.clear()

    def close(self) -> None:
        pass
