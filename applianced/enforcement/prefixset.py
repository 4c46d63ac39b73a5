"""Prefix sets: the disjoint pieces an nftables interval set holds for possibly nested bans.

An interval set refuses overlapping elements, and a /48 may be banned while a /64 inside it is.
``PrefixSet`` keeps one set's bans and the pieces the kernel holds for them (each address
covered until the latest expiry among the bans covering it) and plans the pieces a batch
deletes and adds. Pure, no I/O: ``enforcement/nftables.py`` sends the pieces (``piece_text``)
and commits a plan once the kernel has accepted it.
"""

from __future__ import annotations

import heapq
import math
import socket
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from itertools import pairwise

from applianced.rules.decision import IPNetwork

AF = {32: socket.AF_INET, 128: socket.AF_INET6}  # address bits -> socket family
# A cluster whose every piece expired this long ago is gone from the kernel too: element
# timeouts are rounded up to whole seconds, and the kernel reaps expired elements by itself.
EXPIRY_GRACE = 5.0

Net = tuple[int, int]  # a network as (first address as an int, prefix length): cheap to hash
Piece = tuple[int, int, float]  # first and last address as ints, expires_at (inf: never)


def net_of(network: IPNetwork) -> Net:
    return int(network.network_address), network.prefixlen


def span(net: Net, bits: int) -> tuple[int, int]:
    return net[0], net[0] + (1 << (bits - net[1])) - 1


def disjoint_pieces(spans: Iterable[Piece]) -> list[Piece]:
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


def clusters_of(nets: Iterable[Net], bits: int) -> dict[Net, list[Net]]:
    """Group networks under the widest network containing them (CIDR networks nest or are
    disjoint), keyed by that root."""
    out: dict[Net, list[Net]] = {}
    root_hi = -1
    members: list[Net] = []
    for n in sorted(nets):  # by first address, the widest first
        lo, hi = span(n, bits)
        if lo > root_hi:
            members = out[n] = []
            root_hi = hi
        members.append(n)
    return out


@dataclass(slots=True)
class PrefixPlan:
    """What one batch changes in one prefix set; committed once the kernel has accepted it."""

    old_roots: list[Net]
    clusters: dict[Net, list[Net]]
    bans: dict[Net, float]  # the bans of the new clusters
    pieces: list[Piece]  # every piece of the new clusters
    delete: list[Piece]  # pieces of the old clusters that go
    add: list[Piece]  # pieces of the new clusters that are not there yet


@dataclass(slots=True)
class PrefixSet:
    """The bans of one interval set and the pieces the kernel holds for them, per cluster (a
    widest ban, its root, with the bans nested in it). ``bits``: 32 or 128."""

    bits: int
    bans: dict[Net, float] = field(default_factory=dict)  # network -> expires_at
    members: dict[Net, list[Net]] = field(default_factory=dict)  # root -> its bans
    pieces: dict[Net, list[Piece]] = field(default_factory=dict)  # root -> its pieces
    root_lengths: Counter[int] = field(default_factory=Counter)
    expiries: list[tuple[float, Net]] = field(default_factory=list)  # heap of cluster expiries

    @classmethod
    def build(cls, bits: int, bans: Mapping[Net, float]) -> PrefixSet:
        s = cls(bits)
        s._store(clusters_of(bans, bits), bans)
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
            lo, hi = span(n, self.bits)
            found.update(r for r in self.pieces if lo <= r[0] <= hi)
        return found

    def plan(self, removed: Iterable[Net], added: Mapping[Net, float]) -> PrefixPlan:
        """The pieces to delete and to add so that ``removed`` are lifted and ``added`` (network
        -> expires_at, inf for never) are in force. Pure: ``commit`` records the result."""
        gone = set(removed)
        roots: set[Net] = set()
        for n in gone | added.keys():
            roots |= self._roots_overlapping(n)
        bans = {m: self.bans[m] for r in roots for m in self.members[r] if m not in gone}
        bans.update(added)
        clusters = clusters_of(bans, self.bits)
        pieces = [p for ms in clusters.values() for p in self._cluster_pieces(ms, bans)]
        old = {p for r in roots for p in self.pieces[r]}
        new = set(pieces)
        return PrefixPlan(
            sorted(roots), clusters, bans, pieces, sorted(old - new), sorted(new - old)
        )

    def pieces_after(self, plan: PrefixPlan) -> list[Piece]:
        """Every piece the set holds once ``plan`` is committed."""
        old = set(plan.old_roots)
        return [p for r, ps in self.pieces.items() if r not in old for p in ps] + plan.pieces

    def commit(self, plan: PrefixPlan) -> None:
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
                self.commit(PrefixPlan([root], {}, {}, [], [], []))

    def _cluster_pieces(self, members: list[Net], bans: Mapping[Net, float]) -> list[Piece]:
        if len(members) == 1:  # the usual case: no nesting
            return [(*span(members[0], self.bits), bans[members[0]])]
        return disjoint_pieces((*span(m, self.bits), bans[m]) for m in members)

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


def address_text(value: int, bits: int) -> str:
    return socket.inet_ntop(AF[bits], value.to_bytes(bits // 8, "big"))


def piece_text(piece: Piece, bits: int) -> str:
    """A piece in nft syntax: an address, a prefix, or a range."""
    lo, hi, _ = piece
    size = hi - lo + 1
    if size == 1:
        return address_text(lo, bits)
    if size & (size - 1) == 0 and lo % size == 0:
        return f"{address_text(lo, bits)}/{bits - size.bit_length() + 1}"
    return f"{address_text(lo, bits)}-{address_text(hi, bits)}"
