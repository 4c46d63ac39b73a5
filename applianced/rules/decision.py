"""The values that flow out of the rules: failures, offences, ban decisions and bans.

Times are POSIX seconds (UTC) from the injected clock; durations are seconds; ``None`` as a
duration or expiry means permanent (the jail's blacklist).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

__all__ = [
    "Ban",
    "BanDecision",
    "BanKind",
    "Found",
    "IPAddress",
    "IPNetwork",
    "Lookup",
    "Offence",
]

IPAddress = IPv4Address | IPv6Address
IPNetwork = IPv4Network | IPv6Network


class BanKind(StrEnum):
    """Why a ban exists."""

    AUTO = "auto"  # a jail counted maxretry failures within findtime
    MANUAL = "manual"  # an operator said `appliancectl ban`
    BLACKLIST = "blacklist"  # permanent: max_count bans reached, or `blacklist add`


@dataclass(frozen=True, slots=True)
class Offence:
    """A jail's window for ``network`` reached maxretry: the engine's output, before policy.

    ``lines`` are the matched lines, each prefixed with the syslog sender that delivered it.
    """

    jail: str
    network: IPNetwork
    address: IPAddress
    failures: int
    lines: tuple[str, ...]
    at: float


@dataclass(frozen=True, slots=True)
class Lookup:
    """A failure whose ``<HOST>`` was a hostname (jails whose ``usedns`` is not "no"): the service
    resolves it off the hot path and counts the failure for each address it finds."""

    jail: str
    host: str
    line: str
    at: float
    warn: bool = False  # usedns = "warn": log that a name was resolved for a ban


@dataclass(frozen=True, slots=True)
class Found:
    """A failure a jail with ``log_found`` counted, for its ``found`` log line: the address
    matched, the syslog peer that delivered the message (``file`` when none), the line."""

    jail: str
    address: IPAddress
    sender: str
    line: str


@dataclass(frozen=True, slots=True)
class BanDecision:
    """A ban to record and enforce. ``count`` is the ban's rank for this network in this jail
    (1 for a first offence); ``duration`` is seconds or None for permanent."""

    jail: str
    network: IPNetwork
    duration: float | None
    kind: BanKind
    count: int
    at: float
    lines: tuple[str, ...] = ()

    @property
    def expires_at(self) -> float | None:
        return None if self.duration is None else self.at + self.duration

    @property
    def deciding_line(self) -> str:
        """The last failure's line, the one that decided the ban ("" when none was kept)."""
        return self.lines[-1] if self.lines else ""


@dataclass(frozen=True, slots=True)
class Ban:
    """A ban as the store and the enforcers know it."""

    jail: str
    network: IPNetwork
    started_at: float
    expires_at: float | None
    kind: BanKind
    count: int

    @property
    def permanent(self) -> bool:
        return self.expires_at is None

    def remaining(self, now: float) -> float | None:
        """Seconds left at ``now`` (0 when expired), None when permanent."""
        return None if self.expires_at is None else max(0.0, self.expires_at - now)

    @classmethod
    def from_decision(cls, d: BanDecision) -> Ban:
        return cls(d.jail, d.network, d.at, d.expires_at, d.kind, d.count)
