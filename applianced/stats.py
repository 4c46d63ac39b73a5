"""The read-only snapshot of the appliance's figures: what ``status`` and the metrics show.

``Appliance.stats()`` builds one from its counters (the receiver's, each jail's, the health
counters, bans by kind, the ban latency) at the moment of a request or a scrape; the control
views and ``metricfamilies.py`` read it and never the Appliance's internals. Copies, so a reader
holds figures of one instant while the reactor keeps counting.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from applianced.health import Health
from applianced.receiver.edge import ReceiverStats
from applianced.receiver.senders import OTHER, Sender
from applianced.rules.decision import Ban
from applianced.rules.jail import Jail
from applianced.units import plural

__all__ = ["JailFigures", "Stats", "jail_figures", "status_line"]


@dataclass(frozen=True, slots=True)
class JailFigures:
    """One enabled jail: its settings that status shows, its counters, its active bans."""

    programs: tuple[str, ...]
    maxretry: int
    findtime: float
    bantime: float
    tracked: int
    matched: int
    ignored: int
    offences: int
    evicted: int
    unmatched: Mapping[str, int]  # messages read and found no failure in, per program entry
    active: Mapping[str, int]  # active bans by kind (a BanKind's value)
    banned: int  # active bans that expire
    blacklisted: int  # permanent ones


@dataclass(frozen=True, slots=True)
class Stats:
    uptime: float
    backend: str
    jails: Mapping[str, JailFigures]  # in the engine's order
    receiver: ReceiverStats
    health: Health
    bans_by_kind: Mapping[tuple[str, str], int]  # new bans since start, per (jail, kind)
    latency_buckets: tuple[tuple[float, int], ...]  # cumulative, ending with +Inf
    latency_sum: float
    notify: dict[str, Any] | None
    cluster: dict[str, Any] | None
    # Every tracked sender (the watched ones first), and the bucket of those dropped from it.
    senders: tuple[Sender, ...] = ()
    senders_other: Sender = field(default_factory=lambda: Sender(OTHER))
    senders_dropped: int = 0  # how many senders the bucket holds


def jail_figures(jails: Mapping[str, Jail], active: Iterable[Ban]) -> dict[str, JailFigures]:
    """The figures of each of ``jails`` (in their order), with its ``active`` bans counted."""
    kinds: dict[str, dict[str, int]] = {name: {} for name in jails}
    permanent = dict.fromkeys(jails, 0)
    for ban in active:
        counts = kinds[ban.jail]
        counts[ban.kind.value] = counts.get(ban.kind.value, 0) + 1
        permanent[ban.jail] += ban.permanent
    return {
        name: JailFigures(
            programs=tuple(j.conf.programs),
            maxretry=j.conf.maxretry,
            findtime=j.conf.findtime,
            bantime=j.conf.bantime,
            tracked=j.tracked,
            matched=j.stats.matched,
            ignored=j.stats.ignored,
            offences=j.stats.offences,
            evicted=j.stats.evicted,
            unmatched=dict(j.stats.unmatched),
            active=kinds[name],
            banned=sum(kinds[name].values()) - permanent[name],
            blacklisted=permanent[name],
        )
        for name, j in jails.items()
    }


def status_line(jails: int, bans: int, received: int) -> str:
    """The STATUS= text for systemd (``sdnotify.py``): what ``systemctl status`` shows under
    the unit's name."""
    counts = (plural(jails, "jail"), plural(bans, "active ban"), plural(received, "message"))
    return "{}, {}, {} received".format(*counts)
