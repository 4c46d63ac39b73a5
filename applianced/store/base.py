"""The durable store's interfaces: what the rest of applianced may ask of it.

ARCHITECTURE. ``OffenderStore`` is the interface the Appliance uses (record a ban, an unban, an
expiry; active bans; repeat counts; matched lines for ``appliancectl why``); ``ClusterOutbox`` is
the second, small one that ``cluster/replicator.py`` uses (the outbox of this appliance's
changes and the adoption of the others'). ``store/sqlite.py`` implements both; SQL stays there.
The values here (``BanRecord``, ``BanEvent``, ``BanRow`` and ``ban_from_row``) are what both sides
exchange. Units: times are POSIX seconds (UTC, floats); networks travel as ``str(network)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from ipaddress import IPv4Network, IPv6Network
from socket import AF_INET, AF_INET6, inet_pton
from typing import Any, Literal, Protocol, runtime_checkable

from applianced.rules.decision import Ban, BanDecision, BanKind, IPAddress, IPNetwork

__all__ = [
    "BanEvent",
    "BanRecord",
    "BanRow",
    "ClusterOutbox",
    "OffenderStore",
    "ban_from_row",
    "sender_of",
]

# A ban as the store reads it: jail, network as str(network), started_at, expires_at (None:
# permanent), kind (a BanKind value), count.
BanRow = tuple[str, str, float, float | None, str, int]


@dataclass(frozen=True, slots=True)
class BanRecord:
    """A ban as history shows it: the Ban, how it ended (both None while it has not), and the
    matched lines that caused it, oldest first."""

    ban: Ban
    ended_at: float | None
    end_reason: str | None
    lines: tuple[str, ...]
    node: str = ""  # the appliance that decided it ("" before cluster mode)
    sender: str = ""  # the syslog sender of its last matched line, or "appliancectl"


@dataclass(frozen=True, slots=True)
class BanEvent:
    """One change in the cluster log: a ban (``op`` "ban") or its end by an operator (``op``
    "end"; ``ended_at``/``end_reason`` set). ``seq`` is the local outbox's sequence for a change
    to push, the cluster log's for a change received. ``uid`` names the ban cluster-wide."""

    seq: int
    op: Literal["ban", "end"]
    uid: str
    node: str
    sender: str
    ban: Ban
    lines: tuple[str, ...]
    ended_at: float | None = None
    end_reason: str | None = None


@runtime_checkable
class OffenderStore(Protocol):
    """What the rest of applianced may ask of the durable store. Every method may raise
    StoreError; writes are one transaction each and durable when they return."""

    def record_bans(self, decisions: Sequence[BanDecision], *, share: bool = True) -> None:
        """Record one ban per decision, all or none (``Ban.from_decision`` is the Ban each
        becomes; the caller built them for the kernel already). A (jail, network) has
        at most one ban not ended: a new one ends the previous one with reason "superseded"
        at the new one's start (so does a later decision for the same pair in one batch).
        ``share=False`` keeps them off the cluster (``--local``); no effect outside it."""

    def end_bans(self, bans: Sequence[Ban], at: float, reason: str, *, share: bool = True) -> int:
        """End the not-yet-ended ban of each (jail, network) at ``at``, with ``reason``
        ("unban", "expired", "flush", ...), unless it started after the given Ban's
        ``started_at`` (a newer ban the caller has not seen). Returns how many were ended;
        0 is not an error. ``share`` as for ``record_bans``."""

    def active_bans(self, now: float) -> list[Ban]:
        """Bans not ended that are permanent or expire after ``now``."""

    def active_rows(self, now: float) -> list[BanRow]:
        """``active_bans`` as rows (``ban_from_row`` makes a Ban of one): a restore can
        send the networks' text to the kernel before it has built the Bans."""

    def due_expiries(self, now: float) -> list[Ban]:
        """Bans not ended whose expiry is at or before ``now``."""

    def last_ends(
        self, bans: Sequence[tuple[str, IPNetwork]]
    ) -> dict[tuple[str, IPNetwork], float]:
        """For each (jail, network) of ``bans`` with an ended ban: when the latest ended (a
        start tells a kernel element whose ban the store ended from one it never knew)."""

    def find_active(self, network: IPNetwork, jail: str | None = None) -> list[Ban]:
        """Bans not ended (whatever their expiry) whose network contains or equals
        ``network``, in every jail or in ``jail``."""

    def prior_bans(
        self, jail: str, networks: Sequence[IPNetwork], since: float
    ) -> dict[IPNetwork, int]:
        """For each of ``networks``: how many bans of exactly it in ``jail`` started at or
        after ``since`` (one call for a whole storm's offences)."""

    def history(self, address: IPAddress | IPNetwork, limit: int = 20) -> list[BanRecord]:
        """Up to ``limit`` bans, any jail, ended or not, whose network contains ``address``,
        newest first."""

    def close(self) -> None:
        """Release the store. Closing twice is harmless."""


@runtime_checkable
class ClusterOutbox(Protocol):
    """What the cluster replicator may ask of the local store (cluster mode): this appliance's
    changes not yet pushed, and the adoption of the cluster log's. ``node`` names this
    appliance. Every method may raise StoreError."""

    node: str

    def pending(self, limit: int) -> list[BanEvent]:
        """Up to ``limit`` changes of this appliance not yet pushed, oldest first."""

    def pushed(self, seq: int) -> None:
        """The outbox up to ``seq`` is in the cluster log."""

    def backlog(self) -> int:
        """How many changes wait in the outbox."""

    def cursor(self) -> int:
        """The cluster log's sequence up to which changes are adopted."""

    def adopt(
        self, events: Sequence[BanEvent], cursor: int, now: float
    ) -> tuple[list[Ban], list[Ban]]:
        """Record changes from the cluster log and move the cursor, in one transaction.
        Returns the bans that became active here and the active bans that ended."""


def ban_from_row(row: Sequence[Any]) -> Ban:
    """A ``BanRow`` (the columns a store reads a ban with) as its Ban."""
    return Ban(row[0], _network(row[1]), row[2], row[3], _KINDS[row[4]], row[5])


def sender_of(lines: Sequence[str]) -> str:
    """The sender of the last matched line: the engine prefixes each with ``[sender]``."""
    last = lines[-1] if lines else ""
    return last[1 : last.find("]")] if last.startswith("[") and "]" in last else ""


_KINDS = {k.value: k for k in BanKind}


def _network(text: str) -> IPNetwork:
    """The stored canonical text back to a network, from integers: ``ip_network(text)`` costs
    ~10 us, and restoring 100,000 bans at start reads 100,000 of them."""
    address, _, prefix = text.partition("/")
    if ":" in address:
        return IPv6Network((int.from_bytes(inet_pton(AF_INET6, address), "big"), int(prefix)))
    return IPv4Network((int.from_bytes(inet_pton(AF_INET, address), "big"), int(prefix)))
