"""Cluster adoption, the pure part: which of the other appliances' bans start here, which of
ours they lift. No clock, no I/O; the caller passes the book of active bans and the time.

``Appliance.adopt`` calls ``adopted`` with what the replicator read from the shared log, then
lifts and adds the result in its book (``bans.BanBook``), logs it and sends it to the enforcer.
"""

from __future__ import annotations

from collections.abc import Container, Mapping, Sequence
from dataclasses import replace

from applianced.rules.decision import Ban, IPNetwork
from applianced.units import MAX_BAN_SECONDS

__all__ = ["adopted"]


def adopted(
    active: Mapping[tuple[str, IPNetwork], Ban],
    bans: Sequence[Ban],
    ended: Sequence[Ban],
    jails: Container[str],
    now: float,
) -> tuple[list[Ban], list[Ban]]:
    """``(fresh, lifted)``: ``lifted``, the active bans that ``ended`` ends (the same ban: same
    start); then ``fresh``, those of ``bans`` that start here, in order: in an enabled jail and
    not older than the ban they replace (the active one once ``lifted`` is gone, or an earlier
    one of ``bans``). An expiry beyond ``now`` + MAX_BAN_SECONDS (an appliance of an earlier
    version) is cut to it."""
    lifted = []
    for ban in ended:
        current = active.get((ban.jail, ban.network))
        if current is not None and current.started_at == ban.started_at:
            lifted.append(current)
    gone = {(b.jail, b.network) for b in lifted}
    fresh: list[Ban] = []
    latest: dict[tuple[str, IPNetwork], Ban] = {}
    limit = now + MAX_BAN_SECONDS
    for ban in bans:
        if ban.expires_at is not None and ban.expires_at > limit:
            ban = replace(ban, expires_at=limit)
        key = (ban.jail, ban.network)
        current = latest[key] if key in latest else None if key in gone else active.get(key)
        if ban.jail not in jails or (current is not None and current.started_at > ban.started_at):
            continue
        fresh.append(ban)
        latest[key] = ban
    return fresh, lifted
