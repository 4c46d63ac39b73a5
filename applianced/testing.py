"""Fakes for tests of applianced and of code built on it, as ``treq.testing`` ships treq's:
an in-memory enforcer, an in-memory offenders store and a notifier that records.

Each keeps the contract of the interface it fakes (``enforcement.base.Enforcer``,
``store.base.OffenderStore``, ``enforcement.base.BanNotifier``), observable through plain
attributes. No I/O and no clock: the time is what the caller passes. The suite uses them
wherever the real backend is not what a test is about.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Network, IPv6Network
from typing import Any

from twisted.internet.defer import Deferred, succeed

from applianced.conf.schema import Config
from applianced.enforcement.base import Silence
from applianced.enforcement.memory import MemoryEnforcer
from applianced.rules.decision import Ban, BanDecision, IPAddress, IPNetwork
from applianced.store.base import BanRecord, BanRow, sender_of

__all__ = ["MemoryEnforcer", "MemoryStore", "RecordingNotifier"]


@dataclass(slots=True)
class _Stored:
    ban: Ban
    lines: tuple[str, ...]
    sender: str
    ended_at: float | None = None
    end_reason: str | None = None


class MemoryStore:
    """An ``OffenderStore`` in a list, oldest ban first; ``records`` is every ban recorded.
    ``fail`` (an exception), when set, is raised by every call, as a broken disk would."""

    def __init__(self, lines_per_ban: int = 10) -> None:
        self.records: list[_Stored] = []
        self.lines_per_ban = lines_per_ban
        self.fail: Exception | None = None
        self.closed = False

    def _check(self) -> None:
        if self.fail is not None:
            raise self.fail

    def _open(self) -> list[_Stored]:
        return [r for r in self.records if r.ended_at is None]

    def record_bans(self, decisions: Sequence[BanDecision], *, share: bool = True) -> None:
        self._check()
        for d in decisions:
            ban = Ban.from_decision(d)
            for r in self._open():
                if (r.ban.jail, r.ban.network) == (ban.jail, ban.network):
                    r.ended_at, r.end_reason = ban.started_at, "superseded"
            self.records.append(_Stored(ban, d.lines[-self.lines_per_ban :], sender_of(d.lines)))

    def end_bans(self, bans: Sequence[Ban], at: float, reason: str, *, share: bool = True) -> int:
        self._check()
        ended = 0
        for ban in bans:
            for r in self._open():
                same = (r.ban.jail, r.ban.network) == (ban.jail, ban.network)
                if same and r.ban.started_at <= ban.started_at:
                    r.ended_at, r.end_reason = at, reason
                    ended += 1
        return ended

    def active_bans(self, now: float) -> list[Ban]:
        self._check()
        return [r.ban for r in self._open() if r.ban.expires_at is None or r.ban.expires_at > now]

    def active_rows(self, now: float) -> list[BanRow]:
        return [
            (b.jail, str(b.network), b.started_at, b.expires_at, b.kind.value, b.count)
            for b in self.active_bans(now)
        ]

    def due_expiries(self, now: float) -> list[Ban]:
        self._check()
        due = [
            (r.ban.expires_at, r.ban)
            for r in self._open()
            if r.ban.expires_at is not None and r.ban.expires_at <= now
        ]
        return [b for _, b in sorted(due, key=lambda pair: pair[0])]

    def last_ends(
        self, bans: Sequence[tuple[str, IPNetwork]]
    ) -> dict[tuple[str, IPNetwork], float]:
        self._check()
        found: dict[tuple[str, IPNetwork], float] = {}
        for r in self.records:
            key = (r.ban.jail, r.ban.network)
            if r.ended_at is not None and key in bans:
                found[key] = max(found.get(key, r.ended_at), r.ended_at)
        return found

    def find_active(self, network: IPNetwork, jail: str | None = None) -> list[Ban]:
        self._check()
        return [
            r.ban
            for r in self._open()
            if (jail is None or r.ban.jail == jail) and _within(network, r.ban.network)
        ]

    def prior_bans(
        self, jail: str, networks: Sequence[IPNetwork], since: float
    ) -> dict[IPNetwork, int]:
        self._check()
        counts = dict.fromkeys(networks, 0)
        for r in self.records:
            if r.ban.jail == jail and r.ban.network in counts and r.ban.started_at >= since:
                counts[r.ban.network] += 1
        return counts

    def history(self, address: IPAddress | IPNetwork, limit: int = 20) -> list[BanRecord]:
        self._check()
        found = [r for r in reversed(self.records) if _within(address, r.ban.network)]
        return [
            BanRecord(r.ban, r.ended_at, r.end_reason, r.lines, sender=r.sender)
            for r in found[:limit]
        ]

    def close(self) -> None:
        self.closed = True


def _within(item: IPAddress | IPNetwork, network: IPNetwork) -> bool:
    if item.version != network.version:
        return False
    if isinstance(item, IPv4Network | IPv6Network):
        return item.subnet_of(network)  # type: ignore[arg-type]  # same version, checked
    return item in network


@dataclass(slots=True)
class RecordingNotifier:
    """A ``BanNotifier`` that records: ``banned`` holds each new ban with its lines,
    ``configs`` each reconfiguration, ``tests`` the test mails asked for, ``silences`` each
    sender's silence and return (``("silent" | "returned", Silence, now)``)."""

    banned_calls: list[tuple[Ban, tuple[str, ...]]] = field(default_factory=list)
    silences: list[tuple[str, Silence, float]] = field(default_factory=list)
    configs: list[Config] = field(default_factory=list)
    tests: int = 0
    stopped: bool = False

    def banned(self, ban: Ban, lines: tuple[str, ...]) -> None:
        if not self.stopped:
            self.banned_calls.append((ban, lines))

    def sender_silent(self, silence: Silence, now: float) -> None:
        self.silences.append(("silent", silence, now))

    def sender_returned(self, silence: Silence, now: float) -> None:
        self.silences.append(("returned", silence, now))

    def reconfigure(self, config: Config) -> None:
        self.configs.append(config)

    def status(self) -> dict[str, Any]:
        return {"via": "recording", "backlog": 0, "dropped": 0, "sent": len(self.banned_calls)}

    def test(self) -> Deferred[dict[str, Any]]:
        self.tests += 1
        return succeed({"via": "recording", "to": [], "dialogue": "250 OK"})

    def preview(self, jail: str | None = None) -> dict[str, Any]:
        return {"jail": jail, "headers": [["Subject", "preview"]], "body": "sample\n"}

    def stop(self) -> None:
        self.stopped = True
