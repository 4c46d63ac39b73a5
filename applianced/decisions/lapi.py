"""CrowdSec's Local API shapes, pure: a Ban as a bouncer's decision, Go's duration strings, and
the filters bouncers send (``scopes``, ``origins``, ``scenarios_containing``,
``scenarios_not_containing``; ``ip``, ``range``, ``scope``, ``value``, ``type`` on
``GET /v1/decisions``). ``stream.py`` and ``server.py`` call it; no clock, no I/O.

The shapes follow the Local API's swagger (``Decision``, ``DecisionsStreamResponse``): a
decision is ``{"id", "origin", "type", "scope", "value", "duration", "scenario"}``, its
duration the time left in Go's ``time.Duration`` form (``3h59m58.2s``), negative on a deleted
one as CrowdSec sends it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from hashlib import blake2b
from ipaddress import ip_network
from typing import Any

from applianced.errors import ApplianceError
from applianced.rules.decision import Ban, IPNetwork
from applianced.units import MAX_BAN_SECONDS

__all__ = ["ORIGIN", "Filters", "QueryError", "decision", "decision_id", "go_duration", "scope"]

ORIGIN = "applianced"
# What a permanent ban (the blacklist) lasts for a bouncer: the longest an nftables element
# timeout takes; every pull sends it again from now.
_PERMANENT = MAX_BAN_SECONDS
_SCOPES = ("ip", "range")  # what a stream sends when a bouncer names none, as CrowdSec


class QueryError(ApplianceError):
    """A query parameter a bouncer sent cannot be read (HTTP 400)."""


def go_duration(seconds: float) -> str:
    """``seconds`` (rounded to the millisecond) as Go's ``time.Duration.String()``:
    ``3h59m58.2s``, ``1m0s``, ``250ms``, ``0s``, ``-1.5s``."""
    ms = round(seconds * 1000)
    sign, ms = ("-", -ms) if ms < 0 else ("", ms)
    if ms == 0:
        return "0s"
    if ms < 1000:
        return f"{sign}{ms}ms"
    whole, frac = divmod(ms, 1000)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    text = f"{secs}.{frac:03d}".rstrip("0").rstrip(".") + "s"
    if hours:
        return f"{sign}{hours}h{minutes}m{text}"
    if minutes:
        return f"{sign}{minutes}m{text}"
    return sign + text


def decision_id(ban: Ban) -> int:
    """A ban's decision id: the same for the same ban across restarts and on every node of a
    cluster (it hashes the jail, the network and the start, which the store keeps), below
    2**53 so that every bouncer's JSON reads it exactly."""
    return _id(ban, str(ban.network))


def _id(ban: Ban, network: str) -> int:
    key = f"{ban.jail}|{network}|{ban.started_at!r}".encode()
    return int.from_bytes(blake2b(key, digest_size=8).digest(), "big") >> 11 or 1


def scope(network: IPNetwork) -> tuple[str, str]:
    """(scope, value): ``Ip`` and the address for a single address, else ``Range`` and CIDR."""
    if network.prefixlen == network.max_prefixlen:
        return "Ip", str(network.network_address)
    return "Range", str(network)


def decision(ban: Ban, now: float, deleted: bool = False) -> dict[str, Any]:
    """``ban`` as a bouncer's decision at ``now``: the time left as its duration, or when
    ``deleted`` the time since it ended (negative, at most ``-0.001s``). A startup pull makes
    one per active ban: the network is written out once."""
    text = str(ban.network)
    single = ban.network.prefixlen == ban.network.max_prefixlen
    if deleted:
        left = min(-0.001, (ban.expires_at or now) - now)
    else:
        left = _PERMANENT if ban.expires_at is None else max(0.001, ban.expires_at - now)
    return {
        "id": _id(ban, text),
        "origin": ORIGIN,
        "type": "ban",
        "scope": "Ip" if single else "Range",
        "value": text[: text.rindex("/")] if single else text,
        "duration": go_duration(left),
        "scenario": ban.jail,
    }


def _words(args: Mapping[str, Sequence[str]], name: str) -> tuple[str, ...]:
    """A comma-separated parameter's words (repeated parameters joined), lowercase."""
    return tuple(w.strip().lower() for v in args.get(name, ()) for w in v.split(",") if w.strip())


def _one(args: Mapping[str, Sequence[str]], name: str) -> str | None:
    values = args.get(name)
    return values[-1] if values else None


@dataclass(frozen=True, slots=True)
class Filters:
    """Which decisions a request asks for. Scopes default to ``ip,range`` as CrowdSec's;
    a scope, origin or type we never emit selects nothing."""

    scopes: tuple[str, ...] = _SCOPES
    origins: tuple[str, ...] = ()
    containing: tuple[str, ...] = ()
    not_containing: tuple[str, ...] = ()
    types: tuple[str, ...] = ()
    within: IPNetwork | None = None  # ip= / range=: decisions whose network contains it
    value: str | None = None

    @classmethod
    def of(cls, args: Mapping[str, Sequence[str]]) -> Filters:
        """From a request's query parameters (raises QueryError)."""
        scopes = _words(args, "scopes") or _words(args, "scope") or _SCOPES
        within = None
        for name in ("ip", "range"):
            text = _one(args, name)
            if text:
                try:
                    within = ip_network(text.strip(), strict=False)
                except ValueError:
                    raise QueryError(f"{name}={text!r} is not an address or a range") from None
        return cls(
            scopes=scopes,
            origins=_words(args, "origins"),
            containing=_words(args, "scenarios_containing"),
            not_containing=_words(args, "scenarios_not_containing"),
            types=_words(args, "type"),
            within=within,
            value=_one(args, "value"),
        )

    def admits(self, ban: Ban) -> bool:
        """Whether the bouncer asked for ``ban``."""
        network = ban.network
        within = self.within
        scenario = ban.jail.lower()
        return (
            ("ip" if network.prefixlen == network.max_prefixlen else "range") in self.scopes
            and (not self.origins or ORIGIN in self.origins)
            and (not self.types or "ban" in self.types)
            and (not self.containing or any(w in scenario for w in self.containing))
            and not any(w in scenario for w in self.not_containing)
            and (self.value is None or self.value in (scope(network)[1], str(network)))
            and (
                within is None
                or (
                    within.version == ban.network.version and within.subnet_of(ban.network)  # type: ignore[arg-type]
                )
            )
        )
