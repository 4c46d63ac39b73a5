"""The operator's verbs on the control side: a target's text parsed, the JSON that answers
show (a ban, ``why``, ``status``), and the errors an operator reads.

``control.py`` calls these with the running Appliance; they parse and present, the Appliance
decides and acts. ``status`` reads the Appliance's stats snapshot (``stats.py``), ``why`` its
jails' windows and the store's history, ``explain`` walks one line through its jails
(``rules/explain.py``).
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

from applianced.appliance import Appliance, RequestError
from applianced.errors import StoreError
from applianced.health import Health
from applianced.receiver.parse import message_fields, parse, shape
from applianced.receiver.senders import Sender
from applianced.rules import addresses
from applianced.rules import explain as explaining
from applianced.rules.addresses import network_of
from applianced.rules.decision import Ban, IPAddress, IPNetwork
from applianced.stats import JailFigures

__all__ = [
    "STATUS_BANS",
    "ban",
    "ban_json",
    "parse_address",
    "parse_target",
    "sender_json",
    "senders",
    "status",
    "unban",
    "why",
]

STATUS_BANS = 50  # `status JAIL` lists this many of the jail's bans, the newest first


def parse_address(text: str) -> IPAddress:
    """The canonical address in an operator's ``text`` (rules/addresses.py)."""
    try:
        return addresses.parse_address(text)
    except ValueError as e:
        raise RequestError(str(e)) from None


def parse_target(text: str, ipv6_prefix: int) -> IPNetwork:
    """An address (IPv6 widened to the jail's prefix where that is safe, see
    rules/addresses.py) or an explicit CIDR, in canonical form."""
    if "/" in text:
        try:
            return addresses.parse_network(text)
        except ValueError as e:
            raise RequestError(str(e)) from None
    return network_of(parse_address(text), ipv6_prefix)


def ban_json(ban: Ban, now: float) -> dict[str, Any]:
    return {
        "jail": ban.jail,
        "address": str(ban.network),
        "kind": str(ban.kind),
        "count": ban.count,
        "started_at": ban.started_at,
        "expires_at": ban.expires_at,
        "remaining": ban.remaining(now),
    }


def ban(
    appliance: Appliance,
    jail: str,
    target: str,
    duration: float | None = None,
    permanent: bool = False,
    *,
    local: bool = False,
) -> Ban:
    """A manual ban (or a blacklist entry when ``permanent``) of an address or CIDR."""
    network = parse_target(target, appliance.jail_conf(jail).ipv6_prefix)
    return appliance.ban(jail, network, duration, permanent, local=local)


def unban(
    appliance: Appliance,
    target: str,
    jail: str | None = None,
    *,
    permanent_only: bool = False,
    local: bool = False,
) -> list[Ban]:
    """Lift every active ban covering ``target``; an error when there was none."""
    if jail is not None:
        appliance.jail_conf(jail)
    network = parse_target(target, 128)
    found = appliance.unban(network, jail, permanent_only=permanent_only, local=local)
    if not found:
        where = f"jail {jail}" if jail else "any jail"
        kind = "blacklisted" if permanent_only else "banned"
        raise RequestError(f"{target} is not {kind} in {where}")
    return found


def _why_target(text: str) -> tuple[IPAddress, IPNetwork | None]:
    """An address, or the ``ADDR/len`` that ``banned`` prints: a host's /32 or /128 is the
    address; a wider prefix is the network, seen through its first address."""
    if "/" not in text:
        return parse_address(text), None
    network = parse_target(text, 128)
    address = network.network_address
    return address, None if network.prefixlen == network.max_prefixlen else network


def why(appliance: Appliance, target: str) -> dict[str, Any]:
    """Every jail's view of an address (or a prefix): failures in the window, bans past and
    present."""
    address, prefix = _why_target(target)
    now = appliance.clock.seconds()
    store = appliance.store
    jails = {}
    for name, jail in appliance.engine.jails.items():
        net = network_of(address, jail.conf.ipv6_prefix)
        active = next(
            (
                b
                for (j, n), b in appliance.active.items()
                if j == name and (address in n if prefix is None else n.overlaps(prefix))
            ),
            None,
        )
        try:
            prior = store.prior_bans(name, [net], now - jail.conf.findtime_history)[net]
        except StoreError:
            prior = 0
        jails[name] = {
            "failures": jail.failures(address, now),
            "maxretry": jail.conf.maxretry,
            "recent_lines": list(jail.recent_lines(address)),
            "ignored": jail.ignores(address),
            "active_ban": ban_json(active, now) if active else None,
            "repeat_count": prior,
            "blacklisted": bool(active and active.permanent),
        }
    history = [
        {
            **ban_json(r.ban, now),
            "ended_at": r.ended_at,
            "end_reason": r.end_reason,
            "lines": list(r.lines),
            "node": r.node,
            "sender": r.sender,
        }
        for r in store.history(address if prefix is None else prefix)
    ]
    return {
        "address": str(prefix or address),
        "jails": jails,
        "history": history,
        "cluster": appliance.cluster is not None,  # whether a ban's node means anything
    }


def status(
    appliance: Appliance, jail: str | None = None, counts: Mapping[str, int] | None = None
) -> dict[str, Any]:
    """Health and per-jail figures. ``counts``: the enforcer's element counts, when the
    caller took them off the reactor thread (see control.py); else they are taken here."""
    if jail is not None:
        appliance.jail_conf(jail)
    counts = dict(appliance.enforcer.counts() if counts is None else counts)
    s = appliance.stats()
    per_jail = {
        name: _jail_status(j, counts.get(name, 0))
        for name, j in s.jails.items()
        if jail is None or name == jail
    }
    h = s.health
    one_jail = {} if jail is None else _newest_bans(appliance, jail)
    return {
        **one_jail,
        "uptime": s.uptime,
        "backend": s.backend,
        "jails": per_jail,
        "receiver": asdict(s.receiver),
        "health": _health_status(h),
        "notify": s.notify,
        "senders": {
            "tracked": len(s.senders),
            "watched": sum(1 for x in s.senders if x.silence is not None),
            "silent": [sender_json(x) for x in s.senders if x.silent_since is not None],
        },
        "cluster": s.cluster,
        "decisions": {
            "pulls": h.bouncer_pulls,
            "refused": h.bouncer_refused,
            "connections_refused": h.bouncer_connections_refused,
        },
        "totals": {
            "bans": h.bans_total,
            "unbans": h.unbans_total,
            "expired": h.expired_total,
            "batches": h.batches,
        },
    }


def _jail_status(j: JailFigures, kernel_elements: int) -> dict[str, Any]:
    """One jail's entry in ``status``: its policy, its counts, its bans and kernel elements."""
    return {
        "programs": list(j.programs),
        "maxretry": j.maxretry,
        "findtime": j.findtime,
        "bantime": j.bantime,
        "tracked": j.tracked,
        "matched": j.matched,
        "ignored": j.ignored,
        "offences": j.offences,
        "evicted": j.evicted,
        "unmatched": dict(j.unmatched),
        "banned": j.banned,
        "blacklisted": j.blacklisted,
        "kernel_elements": kernel_elements,
    }


def _health_status(h: Health) -> dict[str, Any]:
    """``status``'s health: the store's, the kernel's, the reconciles', DNS lookups."""
    return {
        "store_errors": h.store_errors,
        "store_failing": h.store_failing,
        "store_pending": h.store_pending,
        "store_dropped": h.store_dropped,
        "recovered": h.recovered,
        "reconcile_repairs": h.reconcile_repairs,
        "reconcile_missing": h.reconcile_missing,
        "reconcile_unknown": h.reconcile_unknown,
        "enforcement_errors": h.enforcement_errors,
        "unapplied": h.unapplied,
        "refused_elements": h.refused_elements,
        "last_error": h.last_error,
        "dns_failed": h.dns_failed,
        "dns_dropped": h.dns_dropped,
    }


def sender_json(sender: Sender) -> dict[str, Any]:
    """One sender as ``senders`` and ``status`` show it (times: POSIX seconds)."""
    return {
        "sender": sender.address,
        "transport": sender.transport or None,
        "listener": sender.listener or None,
        "messages": sender.messages,
        "parse_errors": sender.parse_errors,
        "unmatched": sender.unmatched,
        "bans": sender.bans,
        "last_seen": sender.last_seen,
        "sender_silence": sender.silence,
        "silent_since": sender.silent_since,
    }


def senders(appliance: Appliance) -> dict[str, Any]:
    """Every tracked sender (the watched ones first), and the ``other`` bucket: the figures of
    the senders dropped from the book (``receiver/senders.py``) and how many they were."""
    s = appliance.stats()
    other = sender_json(s.senders_other)
    return {
        "senders": [sender_json(x) for x in s.senders],
        "other": {**other, "senders": s.senders_dropped},
    }


def _newest_bans(appliance: Appliance, jail: str) -> dict[str, Any]:
    """The newest STATUS_BANS active bans of ``jail`` and the count of all (a jail may hold
    100,000: the answer stays small)."""
    bans = appliance.active.of_jail(jail)
    now = appliance.clock.seconds()
    newest = heapq.nlargest(STATUS_BANS, bans, key=lambda b: b.started_at)
    return {"bans": [ban_json(b, now) for b in newest], "bans_total": len(bans)}


def explain(appliance: Appliance, frame: str) -> dict[str, Any]:
    """``appliancectl explain``: one line or raw syslog frame through the running jails, as
    the daemon would take it (nothing is counted; ParseError when it does not parse)."""
    data = frame.encode()
    message = parse(data, datetime.fromtimestamp(appliance.clock.seconds(), UTC))
    walk = explaining.explain(
        message, shape(data), message_fields(message), appliance.engine.jails.values()
    )
    return walk.as_json()
