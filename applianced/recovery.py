"""What a start adopts from the kernel: the elements the store cannot account for.

A ban reaches the kernel a moment before the store (``Appliance._commit``), so a crash between
the two, a store that could not be written, or a store that is new, emptied or replaced leaves
kernel elements the store lacks. ``Appliance.start`` calls ``unaccounted`` with the enforcer's
elements and the store's active rows before the restore (which would remove them): each such
element becomes a ban of its jail, from when the kernel placed it to when the kernel would end
it, recorded in the store as recovered (its one line says so; ``why`` shows it). An element
whose ban the store ended after the kernel placed it (a crash between the store's end and the
kernel's removal) is not adopted: the restore removes it; nor is one that covers an address its
jail must never ban (``ignoreip``, an allowed sender, the appliance's own address: put there by
hand, or before the config protected it), which the restore removes too. ``unaccounted``
decides (pure: no clock, no I/O); ``adopted_rows`` records its decisions through the
Appliance's writes and logs them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from ipaddress import ip_network

from twisted.logger import Logger

from applianced.enforcement.base import Element
from applianced.rules.decision import BanDecision, BanKind, IPNetwork
from applianced.store.base import BanRow
from applianced.units import plural

__all__ = ["RECOVERED_LINE", "adopted_rows", "unaccounted"]

log = Logger()

LastEnds = Callable[[Sequence[tuple[str, IPNetwork]]], Mapping[tuple[str, IPNetwork], float]]
# Each jail's networks never to ban (``Jail.never_ban``).
NeverBan = Mapping[str, Sequence[IPNetwork]]

# The one matched line of a recovered ban: ``sender_of`` reads "kernel" as its sender.
RECOVERED_LINE = "[kernel] recovered at start: in the kernel's set, not in the offenders store"


def unaccounted(
    elements: Sequence[Element],
    rows: Sequence[BanRow],
    last_ends: LastEnds,
    now: float,
    never_ban: NeverBan,
) -> tuple[list[BanDecision], int, int]:
    """``(recovered, stale, protected)``: a decision for each element of a jail and network
    that no active row holds (one inside a row's prefix is a piece the interval set holds for
    nested prefix bans: held), unless it overlaps one of its jail's ``never_ban`` networks
    (``protected`` counts those) or ``last_ends`` (the store's) says its ban ended after the
    element was placed (``stale`` counts those; a permanent element's placement is unknown, so
    any end makes it stale)."""
    known = {(r[0], r[1]) for r in rows}
    # The prefix lengths of the rows' networks that are not single addresses, by jail and
    # version: an element inside one of them is a piece of nested prefix bans, accounted for.
    lengths: dict[tuple[str, int], set[int]] = {}
    for jail, net, *_ in rows:
        length = int(net.rpartition("/")[2])
        version = 6 if ":" in net else 4
        if length < (128 if version == 6 else 32):
            lengths.setdefault((jail, version), set()).add(length)
    lacking: dict[tuple[str, IPNetwork], Element] = {}
    protected = 0
    for e in elements:
        if (e.jail, e.network) in known or (e.expires_at is not None and e.expires_at <= now):
            continue
        network = ip_network(e.network)
        inside = lengths.get((e.jail, network.version), ())
        if any(
            (e.jail, str(network.supernet(new_prefix=n))) in known
            for n in inside
            if n < network.prefixlen
        ):
            continue
        if any(network.overlaps(n) for n in never_ban.get(e.jail, ())):
            protected += 1
            continue
        lacking.setdefault((e.jail, network), e)
    ended = last_ends(list(lacking))
    recovered = []
    for (jail, network), e in lacking.items():
        end = ended.get((jail, network))
        if end is not None and (e.placed_at is None or end >= e.placed_at):
            continue
        at = now if e.placed_at is None else e.placed_at
        recovered.append(
            BanDecision(
                jail=jail,
                network=network,
                duration=None if e.expires_at is None else e.expires_at - at,
                kind=BanKind.BLACKLIST if e.expires_at is None else BanKind.AUTO,
                count=1,
                at=at,
                lines=(RECOVERED_LINE,),
            )
        )
    return recovered, len(lacking) - len(recovered), protected


def adopted_rows(
    elements: Sequence[Element],
    rows: Sequence[BanRow],
    last_ends: LastEnds,
    record: Callable[[Sequence[BanDecision]], None],
    now: float,
    never_ban: NeverBan,
) -> list[BanRow]:
    """``unaccounted``'s bans, recorded (``record``) and logged (a warning naming how many and
    why); their rows, to restore with the store's ``rows``."""
    recovered, stale, protected = unaccounted(elements, rows, last_ends, now, never_ban)
    if protected:
        log.warn(
            "{elements} the store lacks {cover} addresses a jail must never ban (ignoreip, an "
            "allowed syslog sender, this appliance's own address): removed, not adopted",
            count=protected,
            elements=plural(protected, "kernel element"),
            cover="covers" if protected == 1 else "cover",
        )
    if stale:
        log.info(
            "{elements} of bans the store had ended removed",
            count=stale,
            elements=plural(stale, "kernel element"),
        )
    if not recovered:
        return []
    record(recovered)
    log.warn(
        "{bans} in the kernel but not in the offenders store ({why}); adopted with the "
        "kernel's remaining time and recorded as recovered (`appliancectl why ADDR` shows "
        "them)",
        count=len(recovered),
        bans=plural(len(recovered), "ban was", "bans were"),
        why="the store holds no active ban: it is new, was emptied or replaced"
        if not rows
        else "they reached the kernel but not the store: a crash between the two writes, "
        "or a store that could not be written",
    )
    return [(d.jail, str(d.network), d.at, d.expires_at, d.kind.value, d.count) for d in recovered]
