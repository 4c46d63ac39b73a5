"""The layout of the nftables table: a jail's sets and rules as libnftables JSON, and the keys
of a batch's element changes. Pure, no I/O: ``enforcement/nftables.py`` sends what this builds.

Layout, per jail (``set_stem`` maps a jail name to the stem of its set names)::

    <stem>_v4, <stem>_v6                single addresses, timeout = the ban's remaining time
    <stem>_p64_v6                       IPv6 /64s as their network address, timeout likewise
    <stem>_net_v4, <stem>_net_v6        other prefixes (flags interval), timeout likewise
    <stem>_bl_v4, <stem>_bl_v6          single addresses on the permanent blacklist
    <stem>_bl_p64_v6                    IPv6 /64s on the permanent blacklist
    <stem>_bl_net_v4, <stem>_bl_net_v6  other prefixes on the permanent blacklist (flags interval)

and, in the base chain of the jail's hook (``input`` or ``forward``, type filter, policy accept,
priority ``priority``), one rule per set: source address (masked to its first 64 bits for the
``p64`` sets) in the set, the jail's protocol(s) and ports, a counter, then drop or reject.
A packet is dropped when any set matches: a /128, the /64 around it and a /48 around both are
three elements of three sets, each lifted on its own.

Prefixes live in sets of their own because nft 1.0.6 (Debian 12) reads back every element of
every interval set in the table before it changes any element, in any set: 100,000 interval
elements made every ban cost over a second, whereas a hash set's size costs nothing. So the
/64s (IPv6 offenders are banned as their /64) are hash elements, and the interval sets hold
only the rare other prefixes (manual CIDR bans, fail2ban's ``<SUBNET>``), so they stay small.
"""

from __future__ import annotations

import math
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from ipaddress import ip_address, ip_network, summarize_address_range
from typing import Any, Generic, Literal, TypeVar

from applianced.enforcement.base import Element, JailRules
from applianced.enforcement.prefixset import AF, Net, net_of
from applianced.errors import EnforcementError
from applianced.rules.decision import IPNetwork
from applianced.units import MAX_BAN_SECONDS

K = TypeVar("K", str, tuple[int, int])
Kind = Literal["host", "p64", "net"]  # a set of single addresses, of IPv6 /64s, of other prefixes
KINDS: tuple[Kind, ...] = ("host", "p64", "net")
JSON = dict[str, Any]
FAMILY = "inet"
MASK_64 = "ffff:ffff:ffff:ffff::"
IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
HOOKS = ("input", "forward")


def set_stem(jail: str) -> str:
    """The stem of a jail's set names: nft identifiers allow letters, digits and ``_``, so every
    other character (``-`` in ``postfix-sasl``) becomes ``_``. ``setup`` refuses two jails whose
    set names would collide."""
    stem = re.sub(r"[^A-Za-z0-9_]", "_", jail)
    return stem if stem[:1].isalpha() or stem[:1] == "_" else f"j_{stem}"


@dataclass(frozen=True, slots=True)
class SetSpec:
    """One of a jail's ten sets."""

    name: str
    version: Literal[4, 6]
    kind: Kind
    permanent: bool  # the blacklist: elements without timeout

    @property
    def type(self) -> str:
        return "ipv4_addr" if self.version == 4 else "ipv6_addr"

    @property
    def flags(self) -> tuple[str, ...]:
        interval = ("interval",) if self.kind == "net" else ()
        return interval + (() if self.permanent else ("timeout",))


def _set_name(stem: str, version: int, kind: Kind, permanent: bool) -> str:
    infix = "" if kind == "host" else f"_{kind}"
    return f"{stem}{'_bl' if permanent else ''}{infix}_v{version}"


def set_specs(stem: str) -> tuple[SetSpec, ...]:
    return tuple(
        SetSpec(_set_name(stem, v, kind, perm), v, kind, perm)
        for perm in (False, True)
        for kind in KINDS
        for v in (4, 6)
        if kind != "p64" or v == 6
    )


def kind_of(version: int, prefixlen: int) -> Kind:
    """The kind of set a network of this length goes to."""
    if prefixlen == (32 if version == 4 else 128):
        return "host"
    return "p64" if version == 6 and prefixlen == 64 else "net"


def timeout_seconds(expires_at: float, now: float) -> int:
    """Whole seconds, at least 1 (nft takes no fractions; libnftables' JSON parser even drops a
    fractional timeout silently, which makes the element permanent), at most MAX_BAN_SECONDS
    (nft refuses more, "value too large"; the bans' durations are bounded before they get
    here, this is the last line of defence)."""
    return max(1, math.ceil(min(expires_at - now, MAX_BAN_SECONDS)))


# ---------------------------------------------------------------------------------------------
# Rules.


def _ports(jail: JailRules) -> Any:
    """The jail's ports as a JSON right-hand side, or None for every port and protocol."""
    if "all" in jail.ports:
        return None
    values: list[Any] = []
    for p in jail.ports:
        m = re.fullmatch(r"(\d{1,5})(?:-(\d{1,5}))?", p.strip())
        lo, hi = (int(m[1]), int(m[2] or m[1])) if m else (0, 0)
        if not (m and 1 <= lo <= hi <= 65535):
            raise EnforcementError(
                f"jail {jail.name}: port {p!r} is not a port (1-65535), a range (1000-2000) or "
                '"all"; fix the jail\'s ports in the configuration'
            )
        values.append(lo if lo == hi else {"range": [lo, hi]})
    if not values:
        raise EnforcementError(f'jail {jail.name}: no ports; list some ports or "all"')
    return values[0] if len(values) == 1 else {"set": values}


def rule_expr(jail: JailRules, spec: SetSpec) -> list[JSON]:
    proto = "ip" if spec.version == 4 else "ip6"
    saddr: JSON = {"payload": {"protocol": proto, "field": "saddr"}}
    if spec.kind == "p64":
        saddr = {"&": [saddr, MASK_64]}
    expr: list[JSON] = [_match(saddr, f"@{spec.name}")]
    ports = _ports(jail)
    if ports is not None:
        if jail.protocol == "both":
            expr.append(_match({"meta": {"key": "l4proto"}}, {"set": ["tcp", "udp"]}))
            expr.append(_match({"payload": {"protocol": "th", "field": "dport"}}, ports))
        else:
            expr.append(_match({"payload": {"protocol": jail.protocol, "field": "dport"}}, ports))
    expr.append({"counter": None})
    expr.append({jail.verdict: None})
    return expr


def _match(left: JSON, right: Any) -> JSON:
    return {"match": {"op": "==", "left": left, "right": right}}


# ---------------------------------------------------------------------------------------------
# A batch's element changes.


@dataclass(slots=True)
class Changes(Generic[K]):
    """Element changes of one set in one batch: elements to remove, then to add (with their
    expiry, inf for never). Keys: address text for hash sets, Net for prefix sets."""

    remove: dict[K, None] = field(default_factory=dict)
    add: dict[K, float] = field(default_factory=dict)


@dataclass(slots=True)
class Batch:
    """The element changes of one apply or restore, per set: hash sets by address text,
    prefix sets by Net (their pieces are worked out against the bookkeeping at commit)."""

    hosts: dict[str, Changes[str]] = field(default_factory=dict)  # set name -> changes
    prefixes: dict[str, Changes[Net]] = field(default_factory=dict)

    def lift(self, name: str, key: str | Net) -> None:
        """Remove the element of ``key`` (``element_key``) from set ``name``."""
        if isinstance(key, str):
            h = self.hosts.get(name) or self.hosts.setdefault(name, Changes())
            h.add.pop(key, None)
            h.remove[key] = None
        else:
            p = self.prefixes.get(name) or self.prefixes.setdefault(name, Changes())
            p.add.pop(key, None)
            p.remove[key] = None

    def place(self, name: str, key: str | Net, expires_at: float) -> None:
        """Add the element of ``key`` (``element_key``) to set ``name``: an address's text (hash
        sets: a single address, or a /64's network address) or a prefix's Net (interval sets)."""
        if isinstance(key, str):
            h = self.hosts.get(name) or self.hosts.setdefault(name, Changes())
            h.add[key] = expires_at
        else:
            p = self.prefixes.get(name) or self.prefixes.setdefault(name, Changes())
            p.add[key] = expires_at


def element_key(network: IPNetwork) -> str | Net:
    """A network's ``Batch`` key: the text of its address for a hash set (a single address,
    or an IPv6 /64's network address), its Net for an interval set."""
    if kind_of(network.version, network.prefixlen) == "net":
        return net_of(network)
    return socket.inet_ntop(AF[network.max_prefixlen], network.network_address.packed)


def text_key(network: str) -> tuple[int, Kind, str | Net]:
    """A network in canonical text (``str(network)``: "192.0.2.7/32", "2001:db8::/64") as its
    IP version, the kind of its set and its ``element_key``, without building an ipaddress
    object."""
    address, _, length = network.partition("/")
    version, bits = (6, 128) if ":" in address else (4, 32)
    kind = kind_of(version, int(length))
    if version == 4 and kind == "host":  # dotted quads print the same both ways
        return version, kind, address
    packed = socket.inet_pton(AF[bits], address)
    if kind != "net":
        return version, kind, socket.inet_ntop(AF[bits], packed)
    return version, kind, (int.from_bytes(packed, "big"), int(length))


def same_set(have: JSON, want: SetSpec) -> bool:
    return have.get("type") == want.type and set(have.get("flags", ())) == set(want.flags)


def same_chain(have: JSON, hook: str, priority: int) -> bool:
    found = (have.get("type"), have.get("hook"), have.get("prio"), have.get("policy"))
    return found == ("filter", hook, priority, "accept")


# ---------------------------------------------------------------------------------------------
# Elements read back from a listing.


def read_elements(
    listing: list[JSON], owner: Mapping[str, tuple[str, SetSpec]], now: float
) -> list[Element]:
    """The elements of the sets in ``owner`` (set name -> its jail and spec) in a JSON listing
    of the table, with their end and placement from the kernel's ``timeout`` and ``expires``
    (whole seconds). A range (a piece of nested prefix bans) becomes the prefixes that cover
    it exactly."""
    found: list[Element] = []
    for item in listing:
        s = item.get("set")
        if not isinstance(s, dict) or s.get("name") not in owner:
            continue
        jail, spec = owner[s["name"]]
        for elem in s.get("elem", ()):
            value, expires_at, placed_at = elem, None, None
            if isinstance(elem, dict) and "elem" in elem:
                value = elem["elem"]["val"]
                if "expires" in elem["elem"]:
                    left = float(elem["elem"]["expires"])
                    expires_at = now + left
                    placed_at = now + left - float(elem["elem"].get("timeout", left))
            for network in _networks(value, spec):
                found.append(Element(jail, network, expires_at, placed_at))
    return found


def _networks(value: Any, spec: SetSpec) -> list[str]:
    """An element's value (an address, a prefix, a range) as canonical network texts."""
    if isinstance(value, str):
        length = 64 if spec.kind == "p64" else (32 if spec.version == 4 else 128)
        if spec.version == 4:
            return [f"{value}/{length}"]
        return [str(ip_network(f"{value}/{length}"))]
    if "prefix" in value:
        prefix = value["prefix"]
        return [str(ip_network(f"{prefix['addr']}/{prefix['len']}"))]
    low, high = (ip_address(a) for a in value["range"])
    return [str(n) for n in summarize_address_range(low, high)]
