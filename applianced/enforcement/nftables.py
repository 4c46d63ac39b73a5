"""The nftables backend: bans as elements of kernel sets in the table ``inet applianced``.

This module owns that one table entirely (it never writes to another) and talks to the kernel
through libnftables (Debian's python3-nftables binding): JSON for the table's structure and for
listings, nft syntax for element batches (twice as fast at 100,000 elements). The Appliance calls
it: ``setup`` at start and on reload, ``restore_rows`` at start (from the store's rows, in a
worker thread; ``restore`` takes Bans), ``apply`` once per reactor turn. Each call is one
libnftables transaction, unless the kernel refuses it: then halves are sent, split again while
refused, until each refused element stands alone; the rest is applied and the refused elements
are raised as ``ElementsRefused`` (a kernel that refuses even an empty change fails the whole
call, to be retried). No element timeout exceeds MAX_BAN_SECONDS, the longest nft takes.

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

An interval set refuses overlapping elements, and a /48 may be banned while a /64 inside it is.
So for each prefix set the backend keeps the bans and the disjoint pieces the kernel holds for
them (each address covered until the latest expiry among the bans covering it), and sends only
pieces that change. ``restore`` (or ``restore_rows``) rebuilds that bookkeeping: it must
follow ``setup`` at start.

Times are POSIX seconds; element timeouts are whole seconds, at least 1.
"""

from __future__ import annotations

import heapq
import math
import re
import socket
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any, Generic, Literal, TypeVar

from applianced.enforcement.base import ElementsRefused, JailRules, Refused, Restored
from applianced.errors import EnforcementError
from applianced.rules.decision import Ban, IPNetwork
from applianced.units import MAX_BAN_SECONDS

try:
    import nftables
except ImportError:  # reported by NftablesEnforcer.available(), not at import
    nftables = None

__all__ = ["NftablesEnforcer", "set_stem"]

K = TypeVar("K", str, tuple[int, int])
T = TypeVar("T")
Kind = Literal["host", "p64", "net"]  # a set of single addresses, of IPv6 /64s, of other prefixes
_KINDS: tuple[Kind, ...] = ("host", "p64", "net")
JSON = dict[str, Any]
FAMILY = "inet"
_AF = {32: socket.AF_INET, 128: socket.AF_INET6}  # address bits -> socket family
MASK_64 = "ffff:ffff:ffff:ffff::"
IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
HOOKS = ("input", "forward")
# A cluster whose every piece expired this long ago is gone from the kernel too: element
# timeouts are rounded up to whole seconds, and the kernel reaps expired elements by itself.
EXPIRY_GRACE = 5.0
_CHECK = (
    "Check that applianced runs as root or with CAP_NET_ADMIN, that the nf_tables kernel modules "
    "can be loaded, and what `nft list table inet {table}` shows."
)


def set_stem(jail: str) -> str:
    """The stem of a jail's set names: nft identifiers allow letters, digits and ``_``, so every
    other character (``-`` in ``postfix-sasl``) becomes ``_``. ``setup`` refuses two jails whose
    set names would collide."""
    stem = re.sub(r"[^A-Za-z0-9_]", "_", jail)
    return stem if stem[:1].isalpha() or stem[:1] == "_" else f"j_{stem}"


@dataclass(frozen=True, slots=True)
class _SetSpec:
    """One of a jail's eight sets."""

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


def _set_specs(stem: str) -> tuple[_SetSpec, ...]:
    return tuple(
        _SetSpec(_set_name(stem, v, kind, perm), v, kind, perm)
        for perm in (False, True)
        for kind in _KINDS
        for v in (4, 6)
        if kind != "p64" or v == 6
    )


def _kind(version: int, prefixlen: int) -> Kind:
    """The kind of set a network of this length goes to."""
    if prefixlen == (32 if version == 4 else 128):
        return "host"
    return "p64" if version == 6 and prefixlen == 64 else "net"


def _timeout(expires_at: float, now: float) -> int:
    """Whole seconds, at least 1 (nft takes no fractions; libnftables' JSON parser even drops a
    fractional timeout silently, which makes the element permanent), at most MAX_BAN_SECONDS
    (nft refuses more, "value too large"; the bans' durations are bounded before they get
    here, this is the last line of defence)."""
    return max(1, math.ceil(min(expires_at - now, MAX_BAN_SECONDS)))


# ---------------------------------------------------------------------------------------------
# Prefix sets: disjoint pieces for possibly nested bans (pure, no I/O).

Net = tuple[int, int]  # a network as (first address as an int, prefix length): cheap to hash
Piece = tuple[int, int, float]  # first and last address as ints, expires_at (inf: never)


def _net(network: IPNetwork) -> Net:
    return int(network.network_address), network.prefixlen


def _span(net: Net, bits: int) -> tuple[int, int]:
    return net[0], net[0] + (1 << (bits - net[1])) - 1


def _pieces(spans: Iterable[Piece]) -> list[Piece]:
    """Disjoint pieces covering ``spans`` (first, last, expiry), each address until the latest
    expiry among the spans covering it; adjacent pieces with equal expiry are merged."""
    ordered = sorted(spans)
    points = sorted({lo for lo, _, _ in ordered} | {hi + 1 for _, hi, _ in ordered})
    active: list[tuple[float, int]] = []  # (-expiry, last address): a max-heap on expiry
    out: list[Piece] = []
    i = 0
    for a, b in pairwise(points):
        while i < len(ordered) and ordered[i][0] <= a:
            heapq.heappush(active, (-ordered[i][2], ordered[i][1]))
            i += 1
        while active and active[0][1] < a:
            heapq.heappop(active)
        if not active:
            continue
        exp = -active[0][0]
        if out and out[-1][1] == a - 1 and out[-1][2] == exp:
            out[-1] = (out[-1][0], b - 1, exp)
        else:
            out.append((a, b - 1, exp))
    return out


def _clusters(nets: Iterable[Net], bits: int) -> dict[Net, list[Net]]:
    """Group networks under the widest network containing them (CIDR networks nest or are
    disjoint), keyed by that root."""
    out: dict[Net, list[Net]] = {}
    root_hi = -1
    members: list[Net] = []
    for n in sorted(nets):  # by first address, the widest first
        lo, hi = _span(n, bits)
        if lo > root_hi:
            members = out[n] = []
            root_hi = hi
        members.append(n)
    return out


@dataclass(slots=True)
class _PrefixPlan:
    """What one batch changes in one prefix set; committed once the kernel has accepted it."""

    old_roots: list[Net]
    clusters: dict[Net, list[Net]]
    bans: dict[Net, float]  # the bans of the new clusters
    pieces: list[Piece]  # every piece of the new clusters
    delete: list[Piece]  # pieces of the old clusters that go
    add: list[Piece]  # pieces of the new clusters that are not there yet


@dataclass(slots=True)
class _PrefixSet:
    """The bans of one interval set and the pieces the kernel holds for them, per cluster (a
    widest ban, its root, with the bans nested in it). ``bits``: 32 or 128."""

    bits: int
    bans: dict[Net, float] = field(default_factory=dict)  # network -> expires_at
    members: dict[Net, list[Net]] = field(default_factory=dict)  # root -> its bans
    pieces: dict[Net, list[Piece]] = field(default_factory=dict)  # root -> its pieces
    root_lengths: Counter[int] = field(default_factory=Counter)
    expiries: list[tuple[float, Net]] = field(default_factory=list)  # heap of cluster expiries

    @classmethod
    def build(cls, bits: int, bans: Mapping[Net, float]) -> _PrefixSet:
        s = cls(bits)
        s._store(_clusters(bans, bits), bans)
        return s

    def all_pieces(self) -> list[Piece]:
        return [p for ps in self.pieces.values() for p in ps]

    def _roots_overlapping(self, n: Net) -> set[Net]:
        found: set[Net] = set()
        for length in self.root_lengths:
            if length <= n[1]:
                sup = (n[0] >> (self.bits - length) << (self.bits - length), length)
                if sup in self.pieces:
                    found.add(sup)
        if any(length > n[1] for length in self.root_lengths):
            # Roots inside n: rare (a wide ban over narrower ones), so a scan will do.
            lo, hi = _span(n, self.bits)
            found.update(r for r in self.pieces if lo <= r[0] <= hi)
        return found

    def plan(self, removed: Iterable[Net], added: Mapping[Net, float]) -> _PrefixPlan:
        """The pieces to delete and to add so that ``removed`` are lifted and ``added`` (network
        -> expires_at, inf for never) are in force. Pure: ``commit`` records the result."""
        gone = set(removed)
        roots: set[Net] = set()
        for n in gone | added.keys():
            roots |= self._roots_overlapping(n)
        bans = {m: self.bans[m] for r in roots for m in self.members[r] if m not in gone}
        bans.update(added)
        clusters = _clusters(bans, self.bits)
        pieces = [p for ms in clusters.values() for p in self._cluster_pieces(ms, bans)]
        old = {p for r in roots for p in self.pieces[r]}
        new = set(pieces)
        return _PrefixPlan(
            sorted(roots), clusters, bans, pieces, sorted(old - new), sorted(new - old)
        )

    def pieces_after(self, plan: _PrefixPlan) -> list[Piece]:
        """Every piece the set holds once ``plan`` is committed."""
        old = set(plan.old_roots)
        return [p for r, ps in self.pieces.items() if r not in old for p in ps] + plan.pieces

    def commit(self, plan: _PrefixPlan) -> None:
        for r in plan.old_roots:
            for m in self.members.pop(r):
                del self.bans[m]
            del self.pieces[r]
            self.root_lengths[r[1]] -= 1
            if not self.root_lengths[r[1]]:
                del self.root_lengths[r[1]]
        self._store(plan.clusters, plan.bans)

    def prune(self, now: float) -> None:
        """Forget clusters the kernel has expired by itself (bounded memory, no kernel call)."""
        while self.expiries and self.expiries[0][0] + EXPIRY_GRACE < now:
            last, root = heapq.heappop(self.expiries)
            pieces = self.pieces.get(root)
            if pieces is not None and max(p[2] for p in pieces) == last:
                self.commit(_PrefixPlan([root], {}, {}, [], [], []))

    def _cluster_pieces(self, members: list[Net], bans: Mapping[Net, float]) -> list[Piece]:
        if len(members) == 1:  # the usual case: no nesting
            return [(*_span(members[0], self.bits), bans[members[0]])]
        return _pieces((*_span(m, self.bits), bans[m]) for m in members)

    def _store(self, clusters: Mapping[Net, list[Net]], bans: Mapping[Net, float]) -> None:
        for root, ms in clusters.items():
            pieces = self._cluster_pieces(ms, bans)
            self.members[root] = ms
            self.pieces[root] = pieces
            self.root_lengths[root[1]] += 1
            for m in ms:
                self.bans[m] = bans[m]
            last = max(p[2] for p in pieces)
            if last != math.inf:
                heapq.heappush(self.expiries, (last, root))


def _address(value: int, bits: int) -> str:
    return socket.inet_ntop(_AF[bits], value.to_bytes(bits // 8, "big"))


def _piece_text(piece: Piece, bits: int) -> str:
    """A piece in nft syntax: an address, a prefix, or a range."""
    lo, hi, _ = piece
    size = hi - lo + 1
    if size == 1:
        return _address(lo, bits)
    if size & (size - 1) == 0 and lo % size == 0:
        return f"{_address(lo, bits)}/{bits - size.bit_length() + 1}"
    return f"{_address(lo, bits)}-{_address(hi, bits)}"


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


def _rule_expr(jail: JailRules, spec: _SetSpec) -> list[JSON]:
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
# libnftables, typed.


def _call(nft: Any, commands: list[JSON] | str, what: str, table: str) -> tuple[str, Any]:
    """Run ``commands`` (JSON objects, or lines in nft syntax) as one libnftables transaction:
    nft's error text ("" when it was accepted) and its output. Raises EnforcementError when the
    binding cannot reach the library."""
    try:
        if isinstance(commands, str):
            rc, output, error = nft.cmd(commands)
        else:
            rc, output, error = nft.json_cmd({"nftables": commands})
    except (OSError, ValueError) as e:  # the binding could not reach the library, or parse
        check = _CHECK.format(table=table)
        raise EnforcementError(f"nftables failed to {what}: {e}. {check}") from e
    if rc != 0:
        return str(error).strip() or f"return code {rc}", None
    return "", output


def _refusal(what: str, error: str, table: str) -> EnforcementError:
    text = error if len(error) <= 2000 else error[:2000] + " [...]"
    return EnforcementError(f"nftables refused to {what}: {text}. {_CHECK.format(table=table)}")


def _run(nft: Any, commands: list[JSON] | str, what: str, table: str) -> list[JSON]:
    """``_call``, raising EnforcementError when refused; the JSON objects it printed, if any."""
    error, output = _call(nft, commands, what, table)
    if error:
        raise _refusal(what, error, table)
    if isinstance(output, dict):
        objects = output.get("nftables", [])
        return [o for o in objects if isinstance(o, dict)]
    return []


def _list(nft: Any, command: str, table: str, *, terse: bool) -> list[JSON]:
    """A listing in JSON (``terse`` leaves set elements out, and nft 1.0.6 then does not fetch
    them either)."""
    old = nft.set_terse_output(terse)
    try:
        return _run(nft, [{"list": _list_target(command, table)}], f"list {command}", table)
    finally:
        nft.set_terse_output(old)


def _list_target(command: str, table: str) -> JSON:
    if command == "table":
        return {"table": {"family": FAMILY, "name": table}}
    return {command: {"family": FAMILY}}


# ---------------------------------------------------------------------------------------------
# The backend.


@dataclass(slots=True)
class _Changes(Generic[K]):
    """Element changes of one set in one batch: elements to remove, then to add (with their
    expiry, inf for never). Keys: address text for hash sets, Net for prefix sets."""

    remove: dict[K, None] = field(default_factory=dict)
    add: dict[K, float] = field(default_factory=dict)


@dataclass(slots=True)
class _Batch:
    """The element changes of one apply or restore, per set: hash sets by address text,
    prefix sets by Net (their pieces are worked out against the bookkeeping at commit)."""

    hosts: dict[str, _Changes[str]] = field(default_factory=dict)  # set name -> changes
    prefixes: dict[str, _Changes[Net]] = field(default_factory=dict)

    def lift(self, name: str, key: str | Net) -> None:
        """Remove the element of ``key`` (``_key``) from set ``name``."""
        if isinstance(key, str):
            h = self.hosts.get(name) or self.hosts.setdefault(name, _Changes())
            h.add.pop(key, None)
            h.remove[key] = None
        else:
            p = self.prefixes.get(name) or self.prefixes.setdefault(name, _Changes())
            p.add.pop(key, None)
            p.remove[key] = None

    def place(self, name: str, key: str | Net, expires_at: float) -> None:
        """Add the element of ``key`` (``_key``) to set ``name``: an address's text (hash sets:
        a single address, or a /64's network address) or a prefix's Net (interval sets)."""
        if isinstance(key, str):
            h = self.hosts.get(name) or self.hosts.setdefault(name, _Changes())
            h.add[key] = expires_at
        else:
            p = self.prefixes.get(name) or self.prefixes.setdefault(name, _Changes())
            p.add[key] = expires_at


def _key(network: IPNetwork) -> str | Net:
    """A network's ``_Batch`` key: the text of its address for a hash set (a single address,
    or an IPv6 /64's network address), its Net for an interval set."""
    if _kind(network.version, network.prefixlen) == "net":
        return _net(network)
    return socket.inet_ntop(_AF[network.max_prefixlen], network.network_address.packed)


def _text_key(network: str) -> tuple[int, Kind, str | Net]:
    """A network in canonical text (``str(network)``: "192.0.2.7/32", "2001:db8::/64") as its
    IP version, the kind of its set and its ``_key``, without building an ipaddress object."""
    address, _, length = network.partition("/")
    version, bits = (6, 128) if ":" in address else (4, 32)
    kind = _kind(version, int(length))
    if version == 4 and kind == "host":  # dotted quads print the same both ways
        return version, kind, address
    packed = socket.inet_pton(_AF[bits], address)
    if kind != "net":
        return version, kind, socket.inet_ntop(_AF[bits], packed)
    return version, kind, (int.from_bytes(packed, "big"), int(length))


class NftablesEnforcer:
    """The Enforcer on nftables. Every change is one libnftables transaction.

    ``table``: the table (family inet) this backend owns; ``priority``: of its base chains
    (-10 runs before a typical firewall's accept rules at 0); ``nft``: a libnftables context
    (a new one by default; it works in the network namespace of the calling thread).
    The table name must be an identifier that is not a keyword of nft's syntax.
    """

    name = "nftables"

    def __init__(
        self,
        *,
        table: str = "applianced",
        priority: int = -10,
        nft: nftables.Nftables | None = None,
    ) -> None:
        if not IDENTIFIER.fullmatch(table):
            raise EnforcementError(f"nftables table name {table!r}: use letters, digits and _")
        # counts() may run in a worker thread: it lists through a context of its own, never
        # the one apply uses (an injected context, in tests, serves both).
        self._listing_context: Callable[[], Any]
        if nft is None:
            if nftables is None:
                raise EnforcementError(
                    "the python3-nftables binding is not installed; install python3-nftables "
                    "or run with --dry-run"
                )
            nft = nftables.Nftables()
            self._listing_context = nftables.Nftables
        else:
            shared = nft
            self._listing_context = lambda: shared
        self.table = table
        self.priority = priority
        self._nft: Any = nft
        self._nft.set_json_output(True)
        self._jails: dict[str, JailRules] = {}
        self._specs: dict[str, tuple[_SetSpec, ...]] = {}  # jail -> its sets
        # (jail, IP version, kind of set, permanent?) -> set name
        self._names: dict[tuple[str, int, Kind, bool], str] = {}
        self._bits: dict[str, int] = {}  # set name -> address bits (32, 128)
        self._prefix_sets: dict[str, _PrefixSet] = {}  # interval set name -> bookkeeping
        # Hash set name -> the elements this process placed there and has not lifted since
        # (some may have expired in the kernel meanwhile), or None while the set may hold
        # elements we did not place (kept by setup from an earlier run, until restore). An
        # element not placed needs no lift, so a new ban is one element operation.
        self._placed: dict[str, set[str] | None] = {}

    @classmethod
    def available(cls) -> str | None:
        """None if libnftables can be used here, else why not (for the operator)."""
        if nftables is None:
            return "the python3-nftables binding is not installed"
        try:
            nft = nftables.Nftables()
            nft.set_json_output(True)
            # `list chains` rather than `list tables`: nft 1.0.6 fetches every set element of
            # every table for the latter.
            rc, _, error = nft.cmd("list chains")
        except OSError as e:
            return f"libnftables cannot be loaded: {e}"
        if rc != 0:
            return f"nftables refused to list chains: {str(error).strip() or f'return code {rc}'}"
        return None

    # -- setup ------------------------------------------------------------------------------

    def setup(self, jails: Sequence[JailRules]) -> None:
        specs = {j.name: _set_specs(set_stem(j.name)) for j in jails}
        owner: dict[str, str] = {}
        for jail, ss in specs.items():
            for s in ss:
                if owner.setdefault(s.name, jail) != jail:
                    raise EnforcementError(
                        f"jails {owner[s.name]!r} and {jail!r} would share the nftables set "
                        f"{s.name!r}; rename one of them"
                    )
        rules = [(j, _rule_expr(j, s)) for j in jails for s in specs[j.name]]
        hooks = sorted({j.hook for j in jails}, key=HOOKS.index)
        want = {s.name: s for ss in specs.values() for s in ss}
        have_sets, have_chains = self._existing()
        keep_sets = {n for n, s in want.items() if n in have_sets and _same_set(have_sets[n], s)}
        keep_chains = {
            h for h in hooks if h in have_chains and _same_chain(have_chains[h], h, self.priority)
        }

        # One transaction: rules go first (flushed), so that the sets of dropped jails, and
        # sets whose definition changed, can be deleted; kept sets keep their elements.
        cmds: list[JSON] = [{"add": {"table": {"family": FAMILY, "name": self.table}}}]
        cmds += [{"flush": {"chain": self._ref(c)}} for c in have_chains]
        cmds += [{"delete": {"chain": self._ref(c)}} for c in have_chains.keys() - keep_chains]
        cmds += [{"delete": {"set": self._ref(n)}} for n in have_sets.keys() - keep_sets]
        cmds += [{"add": {"set": self._set_json(s)}} for n, s in want.items() if n not in keep_sets]
        for h in hooks:
            if h not in keep_chains:
                chain = {"type": "filter", "hook": h, "prio": self.priority, "policy": "accept"}
                cmds.append({"add": {"chain": {**self._ref(h), **chain}}})
        for j, expr in rules:
            rule = {"chain": j.hook, "expr": expr, "comment": f"jail {j.name}"}
            cmds.append({"add": {"rule": {"family": FAMILY, "table": self.table, **rule}}})
        _run(self._nft, cmds, "set up the jails' sets and rules", self.table)

        self._jails = {j.name: j for j in jails}
        self._specs = specs
        self._names = {
            (jail, s.version, s.kind, s.permanent): s.name for jail, ss in specs.items() for s in ss
        }
        self._bits = {s.name: 32 if s.version == 4 else 128 for s in want.values()}
        # Kept prefix sets keep their bookkeeping, as the kernel keeps their elements.
        prefix_sets = {}
        for n, spec in want.items():
            if spec.kind == "net":
                kept = self._prefix_sets.get(n) if n in keep_sets else None
                prefix_sets[n] = kept or _PrefixSet(self._bits[n])
        self._prefix_sets = prefix_sets
        self._placed = {
            n: self._placed.get(n) if n in keep_sets else set()
            for n, spec in want.items()
            if spec.kind != "net"
        }

    def _existing(self) -> tuple[dict[str, JSON], dict[str, JSON]]:
        """The sets and chains of our table now, by name (terse: without elements)."""
        found: dict[str, dict[str, JSON]] = {"set": {}, "chain": {}}
        for kind in found:
            for o in _list(self._nft, f"{kind}s", self.table, terse=True):
                obj = o.get(kind)
                if isinstance(obj, dict) and obj.get("table") == self.table:
                    found[kind][str(obj["name"])] = obj
        return found["set"], found["chain"]

    def _ref(self, name: str) -> JSON:
        return {"family": FAMILY, "table": self.table, "name": name}

    def _set_json(self, spec: _SetSpec) -> JSON:
        out: JSON = {**self._ref(spec.name), "type": spec.type}
        if spec.flags:
            out["flags"] = list(spec.flags)
        return out

    # -- bans -------------------------------------------------------------------------------
    #
    # Element changes go to libnftables in nft syntax rather than JSON: for 100,000 elements
    # the JSON path took twice as long (building and dumping the objects, then nft parsing
    # them). Every token is ours: identifiers checked at construction and setup, addresses
    # printed by the socket module, integer timeouts.

    def apply(self, bans: Sequence[Ban], unbans: Sequence[Ban], now: float) -> None:
        # Unbans first, then bans: a batch that replaces a ban of a network ends with it banned.
        changes = [(u, False) for u in unbans] + [(b, True) for b in bans]
        what = f"apply {len(bans)} bans and {len(unbans)} unbans"

        def send(chunk: Sequence[tuple[Ban, bool]], first: bool) -> str:
            batch = _Batch()
            for ban, place in chunk:
                if self._lift(batch, ban) and place:
                    batch.place(self._target(ban), _key(ban.network), _expiry(ban))
            return self._commit(batch, now, (), what)

        self._transact(changes, send, lambda c: (c[0].jail, str(c[0].network)), what)

    def restore(self, active: Sequence[Ban], now: float) -> None:
        self.restore_rows([Restored(b.jail, str(b.network), b.expires_at) for b in active], now)

    def restore_rows(self, active: Sequence[Restored], now: float) -> None:
        """``restore`` straight from the store's rows: the nft text needs no address object,
        and libnftables releases the GIL, so the kernel loads while the Appliance builds the
        Bans of the same rows (see RowRestorer)."""
        names = self._names
        rows = [r for r in active if r.jail in self._jails]
        what = f"restore {len(active)} bans"

        def send(chunk: Sequence[Restored], first: bool) -> str:
            batch = _Batch()
            for jail, network, expires_at in chunk:
                version, kind, key = _text_key(network)
                name = names[(jail, version, kind, expires_at is None)]
                batch.place(name, key, math.inf if expires_at is None else expires_at)
            return self._commit(batch, now, list(names.values()) if first else (), what)

        self._transact(rows, send, lambda r: (r.jail, r.network), what)

    def flush(self) -> None:
        error = self._commit(_Batch(), 0.0, list(self._names.values()), "flush every set")
        if error:
            raise _refusal("flush every set", error, self.table)

    def counts(self) -> Mapping[str, int]:
        """Kernel elements per jail, from a listing (so expired bans are gone). Nested prefix
        bans count as the pieces that hold them. Costs about 1.5 s per 100,000 elements, most of
        it in libnftables, which releases the GIL: called from a worker thread, it holds other
        threads for ~0.2 s at most (the binding's JSON parse), measured with a 1 ms ticker."""
        owner = {name: key[0] for key, name in self._names.items()}
        out = dict.fromkeys(self._jails, 0)
        if owner:
            nft = self._listing_context()
            nft.set_json_output(True)
            for o in _list(nft, "table", self.table, terse=False):
                s = o.get("set")
                if isinstance(s, dict) and s.get("name") in owner:
                    out[owner[s["name"]]] += len(s.get("elem", ()))
        return out

    def close(self) -> None:
        """Nothing to release: bans stay in the kernel."""

    def _target(self, ban: Ban) -> str:
        n = ban.network
        return self._names[(ban.jail, n.version, _kind(n.version, n.prefixlen), ban.permanent)]

    def _lift(self, batch: _Batch, ban: Ban) -> bool:
        """Plan to remove the ban's network from its jail's temporary set and from its
        blacklist (a jail bans a network at most once: the store and MemoryEnforcer key bans by
        jail and network). False if the jail is not set up."""
        n = ban.network
        kind, key = _kind(n.version, n.prefixlen), _key(n)
        for permanent in (False, True):
            name = self._names.get((ban.jail, n.version, kind, permanent))
            if name is None:
                return False
            placed = self._placed.get(name)  # None for interval sets too
            if placed is None or key in placed:
                batch.lift(name, key)
        return True

    def _transact(
        self,
        items: Sequence[T],
        send: Callable[[Sequence[T], bool], str],
        label: Callable[[T], tuple[str, str]],
        what: str,
    ) -> None:
        """``send(items, first)`` builds and sends one transaction of ``items`` (``first``:
        with the call's flushes, if any) and returns nft's error text, "" if accepted. When the
        kernel refuses them all but accepts an empty change, halves are sent, and halves of a
        refused half, until each refused item stands alone: the rest is applied, and the
        refused items (``label``: jail, network) are raised as ElementsRefused."""
        error = send(items, True)
        if not error:
            return
        if not items or not self._intact():  # no permission, say: not the elements' fault
            raise _refusal(what, error, self.table)
        refused = self._isolate(items, error, send, True, what)
        if refused:
            raise ElementsRefused([Refused(*label(item), reason) for item, reason in refused])

    def _intact(self) -> bool:
        """Whether the kernel holds every set ``setup`` made, and lets us list them: a batch
        refused then is the elements' fault. A table or set flushed by another tool (a
        ``flush ruleset`` in /etc/nftables.conf) is not: the whole batch is kept for retry,
        never reported element by element, until ``setup`` (a reload, a start) rebuilds it."""
        try:
            have, _ = self._existing()
        except EnforcementError:
            return False
        return all(spec.name in have for specs in self._specs.values() for spec in specs)

    def _isolate(
        self,
        items: Sequence[T],
        error: str,
        send: Callable[[Sequence[T], bool], str],
        first: bool,
        what: str,
    ) -> list[tuple[T, str]]:
        """The items refused, with nft's first line of error, once ``items`` were refused as
        one transaction with ``error``: each half is sent on its own, a refused half split
        again. The flushes go with the first half, alone if its only item is refused."""
        if len(items) == 1:
            if first and (flush_error := send((), True)):
                raise _refusal(what, flush_error, self.table)
            return [(items[0], error.splitlines()[0])]
        mid = len(items) // 2
        refused: list[tuple[T, str]] = []
        for half, carries in ((items[:mid], first), (items[mid:], False)):
            half_error = send(half, carries)
            if half_error:
                refused += self._isolate(half, half_error, send, carries, what)
        return refused

    def _commit(self, batch: _Batch, now: float, flush: Sequence[str], what: str) -> str:
        """Send a batch as one transaction: first flush the sets in ``flush`` and remove
        elements, then add elements (so no piece added meets an old one it overlaps); nft's
        error text if the kernel refused it, else "". The bookkeeping of what the sets hold
        changes only once the kernel has accepted."""
        flushed = set(flush)
        removes = [f"flush set {FAMILY} {self.table} {n}" for n in flush]
        adds: list[str] = []

        def add(name: str, elements: Iterable[tuple[str, float]]) -> None:
            listed = ", ".join(
                v if exp == math.inf else f"{v} timeout {_timeout(exp, now)}s"
                for v, exp in elements
            )
            if listed:
                adds.append(f"add element {FAMILY} {self.table} {name} {{ {listed} }}")

        for name, h in batch.hosts.items():
            if h.remove and name not in flushed:
                # Deleting an element that is not there fails the whole transaction: adding it
                # first (a no-op when it is there) makes the delete always succeed. A banned
                # element is then added anew, which also sets its new timeout.
                listed = ", ".join(h.remove)
                removes.append(f"add element {FAMILY} {self.table} {name} {{ {listed} }}")
                removes.append(f"delete element {FAMILY} {self.table} {name} {{ {listed} }}")
            add(name, h.add.items())

        rebuilt: dict[str, _PrefixSet] = {}
        plans: dict[str, _PrefixPlan] = {}
        for name in flushed & self._prefix_sets.keys():
            ps = rebuilt[name] = _PrefixSet.build(
                self._bits[name], batch.prefixes.pop(name, _Changes()).add
            )
            add(name, ((_piece_text(p, ps.bits), p[2]) for p in ps.all_pieces()))
        for name, c in batch.prefixes.items():
            ps = self._prefix_sets[name]
            ps.prune(now)
            plan = plans[name] = ps.plan(c.remove, c.add)
            pieces = plan.add
            if plan.delete:
                # nft 1.0.6 checks overlaps against its own view of the set, which a guarded
                # delete confuses, and a piece may have just expired: rewriting the set (small:
                # prefixes only) is exact and always accepted.
                removes.append(f"flush set {FAMILY} {self.table} {name}")
                pieces = [p for p in ps.pieces_after(plan) if p[2] > now]
            add(name, ((_piece_text(p, ps.bits), p[2]) for p in pieces))

        if removes or adds:
            error, _ = _call(self._nft, "\n".join(removes + adds) + "\n", what, self.table)
            if error:
                return error
        for name in flushed & self._placed.keys():
            self._placed[name] = set()
        for name, h in batch.hosts.items():
            placed = self._placed.get(name)
            if placed is not None:
                placed.difference_update(h.remove)
                placed.update(h.add)
        self._prefix_sets.update(rebuilt)
        for name, plan in plans.items():
            self._prefix_sets[name].commit(plan)
        return ""


def _expiry(ban: Ban) -> float:
    return math.inf if ban.expires_at is None else ban.expires_at


def _same_set(have: JSON, want: _SetSpec) -> bool:
    return have.get("type") == want.type and set(have.get("flags", ())) == set(want.flags)


def _same_chain(have: JSON, hook: str, priority: int) -> bool:
    found = (have.get("type"), have.get("hook"), have.get("prio"), have.get("policy"))
    return found == ("filter", hook, priority, "accept")
