"""The nftables backend: bans as elements of kernel sets in the table ``inet applianced``.

This module owns that one table entirely (it never writes to another) and talks to the kernel
through libnftables (Debian's python3-nftables binding): JSON for the table's structure and for
listings, nft syntax for element batches (twice as fast at 100,000 elements). The Appliance calls
it: ``setup`` at start and on reload, ``restore_rows`` at start (from the store's rows, in a
worker thread; ``restore`` takes Bans), ``apply`` once per reactor turn; ``elements`` and
``counts`` read the sets back (the start's adoption, the periodic reconcile). Each call is one
libnftables transaction, unless the kernel refuses it: then halves are sent, split again while
refused, until each refused element stands alone; the rest is applied and the refused elements
are raised as ``ElementsRefused`` (a kernel that refuses even an empty change fails the whole
call, to be retried). No element timeout exceeds MAX_BAN_SECONDS, the longest nft takes.

An interval set refuses overlapping elements, and a /48 may be banned while a /64 inside it is.
So for each prefix set the backend keeps the bans and the disjoint pieces the kernel holds for
them (``prefixset.py``), and sends only pieces that change. ``restore`` (or ``restore_rows``)
rebuilds that bookkeeping: it must follow ``setup`` at start. The sets' and rules' JSON is
built by ``nftlayout.py`` (the table's layout is described there), the libnftables calls are
typed in ``libnft.py``.

Times are POSIX seconds; element timeouts are whole seconds, at least 1.

Over 400 lines and kept whole: its one job is the table's transactions and their split when
refused; the layout, the prefix pieces and the library calls are already modules of their own.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

from applianced.enforcement.base import Element, ElementsRefused, JailRules, Refused, Restored
from applianced.enforcement.libnft import nft_call, nft_list, nft_run, refusal
from applianced.enforcement.nftlayout import (
    FAMILY,
    HOOKS,
    IDENTIFIER,
    JSON,
    Batch,
    Changes,
    Kind,
    SetSpec,
    element_key,
    kind_of,
    read_elements,
    rule_expr,
    same_chain,
    same_set,
    set_specs,
    set_stem,
    text_key,
    timeout_seconds,
)
from applianced.enforcement.prefixset import PrefixPlan, PrefixSet, piece_text
from applianced.errors import EnforcementError
from applianced.rules.decision import Ban
from applianced.units import plural

try:
    import nftables
except ImportError:  # reported by NftablesEnforcer.available(), not at import
    nftables = None

__all__ = ["NftablesEnforcer", "set_stem"]

T = TypeVar("T")


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
        # (jail, IP version, kind of set, permanent?) -> set name
        self._names: dict[tuple[str, int, Kind, bool], str] = {}
        self._bits: dict[str, int] = {}  # set name -> address bits (32, 128)
        self._prefix_sets: dict[str, PrefixSet] = {}  # interval set name -> bookkeeping
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
        specs = {j.name: set_specs(set_stem(j.name)) for j in jails}
        owner: dict[str, str] = {}
        for jail, ss in specs.items():
            for s in ss:
                if owner.setdefault(s.name, jail) != jail:
                    raise EnforcementError(
                        f"jails {owner[s.name]!r} and {jail!r} would share the nftables set "
                        f"{s.name!r}; rename one of them"
                    )
        rules = [(j, rule_expr(j, s)) for j in jails for s in specs[j.name]]
        hooks = sorted({j.hook for j in jails}, key=HOOKS.index)
        want = {s.name: s for ss in specs.values() for s in ss}
        have_sets, have_chains = self._existing()
        keep_sets = {n for n, s in want.items() if n in have_sets and same_set(have_sets[n], s)}
        keep_chains = {
            h for h in hooks if h in have_chains and same_chain(have_chains[h], h, self.priority)
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
        nft_run(self._nft, cmds, "set up the jails' sets and rules", self.table)

        self._jails = {j.name: j for j in jails}
        self._names = {
            (jail, s.version, s.kind, s.permanent): s.name for jail, ss in specs.items() for s in ss
        }
        self._bits = {s.name: 32 if s.version == 4 else 128 for s in want.values()}
        # Kept prefix sets keep their bookkeeping, as the kernel keeps their elements.
        prefix_sets = {}
        for n, spec in want.items():
            if spec.kind == "net":
                kept = self._prefix_sets.get(n) if n in keep_sets else None
                prefix_sets[n] = kept or PrefixSet(self._bits[n])
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
            for o in nft_list(self._nft, f"{kind}s", self.table, terse=True):
                obj = o.get(kind)
                if isinstance(obj, dict) and obj.get("table") == self.table:
                    found[kind][str(obj["name"])] = obj
        return found["set"], found["chain"]

    def _ref(self, name: str) -> JSON:
        return {"family": FAMILY, "table": self.table, "name": name}

    def _set_json(self, spec: SetSpec) -> JSON:
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
        what = f"apply {plural(len(bans), 'ban')} and {plural(len(unbans), 'unban')}"

        def send(chunk: Sequence[tuple[Ban, bool]], first: bool) -> str:
            batch = Batch()
            for ban, place in chunk:
                if self._lift(batch, ban) and place:
                    batch.place(self._target(ban), element_key(ban.network), _expiry(ban))
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
        what = f"restore {plural(len(active), 'ban')}"

        def send(chunk: Sequence[Restored], first: bool) -> str:
            batch = Batch()
            for jail, network, expires_at in chunk:
                version, kind, key = text_key(network)
                name = names[(jail, version, kind, expires_at is None)]
                batch.place(name, key, math.inf if expires_at is None else expires_at)
            return self._commit(batch, now, list(names.values()) if first else (), what)

        self._transact(rows, send, lambda r: (r.jail, r.network), what)

    def flush(self) -> None:
        error = self._commit(Batch(), 0.0, list(self._names.values()), "flush every set")
        if error:
            raise refusal("flush every set", error, self.table)

    def counts(self) -> Mapping[str, int]:
        """Kernel elements per jail: ``set_counts`` summed over each jail's sets."""
        owner = {name: key[0] for key, name in self._names.items()}
        out = dict.fromkeys(self._jails, 0)
        for name, n in self.set_counts().items():
            if name in owner:
                out[owner[name]] += n
        return out

    def set_counts(self) -> Mapping[str, int]:
        """Kernel elements per set of ours, from a listing (so expired bans are gone). Nested
        prefix bans count as the pieces that hold them. Costs about 1.5 s per 100,000 elements,
        most of it in libnftables, which releases the GIL: called from a worker thread, it
        holds other threads for ~0.2 s at most (the binding's JSON parse), measured with a
        1 ms ticker."""
        out = dict.fromkeys(self._names.values(), 0)
        if out:
            nft = self._listing_context()
            nft.set_json_output(True)
            for o in nft_list(nft, "table", self.table, terse=False):
                s = o.get("set")
                if isinstance(s, dict) and s.get("name") in out:
                    out[s["name"]] = len(s.get("elem", ()))
        return out

    def elements(self, now: float) -> list[Element]:
        """The jails' elements from a listing of the table (see ``nftlayout.read_elements``);
        about as costly as ``counts``."""
        specs = {s.name: s for j in self._jails for s in set_specs(set_stem(j))}
        owner = {name: (key[0], specs[name]) for key, name in self._names.items()}
        if not owner:
            return []
        nft = self._listing_context()
        nft.set_json_output(True)
        return read_elements(nft_list(nft, "table", self.table, terse=False), owner, now)

    def close(self) -> None:
        """Nothing to release: bans stay in the kernel."""

    def _target(self, ban: Ban) -> str:
        n = ban.network
        return self._names[(ban.jail, n.version, kind_of(n.version, n.prefixlen), ban.permanent)]

    def _lift(self, batch: Batch, ban: Ban) -> bool:
        """Plan to remove the ban's network from its jail's temporary set and from its
        blacklist (a jail bans a network at most once: the store and MemoryEnforcer key bans by
        jail and network). False if the jail is not set up."""
        n = ban.network
        kind, key = kind_of(n.version, n.prefixlen), element_key(n)
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
            raise refusal(what, error, self.table)
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
        return set(self._names.values()) <= have.keys()

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
                raise refusal(what, flush_error, self.table)
            return [(items[0], error.splitlines()[0])]
        mid = len(items) // 2
        refused: list[tuple[T, str]] = []
        for half, carries in ((items[:mid], first), (items[mid:], False)):
            half_error = send(half, carries)
            if half_error:
                refused += self._isolate(half, half_error, send, carries, what)
        return refused

    def _commit(self, batch: Batch, now: float, flush: Sequence[str], what: str) -> str:
        """Send a batch as one transaction: first flush the sets in ``flush`` and remove
        elements, then add elements (so no piece added meets an old one it overlaps); nft's
        error text if the kernel refused it, else "". The bookkeeping of what the sets hold
        changes only once the kernel has accepted."""
        flushed = set(flush)
        removes = [f"flush set {FAMILY} {self.table} {n}" for n in flush]
        adds: list[str] = []

        def add(name: str, elements: Iterable[tuple[str, float]]) -> None:
            listed = ", ".join(
                v if exp == math.inf else f"{v} timeout {timeout_seconds(exp, now)}s"
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

        rebuilt: dict[str, PrefixSet] = {}
        plans: dict[str, PrefixPlan] = {}
        for name in flushed & self._prefix_sets.keys():
            ps = rebuilt[name] = PrefixSet.build(
                self._bits[name], batch.prefixes.pop(name, Changes()).add
            )
            add(name, ((piece_text(p, ps.bits), p[2]) for p in ps.all_pieces()))
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
            add(name, ((piece_text(p, ps.bits), p[2]) for p in pieces))

        if removes or adds:
            error, _ = nft_call(self._nft, "\n".join(removes + adds) + "\n", what, self.table)
            if error:
                return error
        self._record(batch, flushed, rebuilt, plans)
        return ""

    def _record(
        self,
        batch: Batch,
        flushed: set[str],
        rebuilt: Mapping[str, PrefixSet],
        plans: Mapping[str, PrefixPlan],
    ) -> None:
        """The bookkeeping of what the sets hold, once the kernel has accepted ``batch``."""
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


def _expiry(ban: Ban) -> float:
    return math.inf if ban.expires_at is None else ban.expires_at
