"""The Appliance: what happens between the rules engine, the durable store and the enforcer.

It owns the life of a ban: offences from the engine become decisions (the policy needs the
repeat count, read from the store), decisions of one reactor turn go to the enforcer as one
batch, then to the store in one transaction (``storewrites.py`` keeps the rows a full store
refuses); expiries are recorded and lifted;
manual bans, unbans and the blacklist go through the same path. Its collaborators each own one
job: the book of active bans (``bans.py``), the batcher that sends them to the kernel and
retries (``enforcement/batcher.py``), the expiry timer (``expiry.py``), which of the
cluster's bans to adopt (``adoption.py``), the ban lines and their budget (``banlines.py``),
hostname lookups (``hostnames.py``); the operator's views (``views.py``) and the metrics read its
``stats()`` snapshot. Time comes from the injected reactor, never from a global clock.

``service.make_service`` builds and wires it; tests drive it directly with a ``task.Clock``
and the fakes of ``applianced.testing`` (or a temporary SQLite store).

Over 500 lines and kept whole: each method is one step of a ban's life or one operator act on
the same book, store writes (``storewrites.py``) and enforcer; what a start adopts is decided
in ``recovery.py``, the kernel's check in ``reconcile.py``. The start could move to
``restore.py``.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from typing import Any

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from applianced.adoption import adopted
from applianced.banlines import BanLines
from applianced.bans import BanBook
from applianced.conf.schema import Config, JailConf
from applianced.enforcement.base import BanNotifier, Enforcer, JailRules, Restored
from applianced.enforcement.batcher import Batcher
from applianced.enforcement.memory import MemoryEnforcer
from applianced.errors import ApplianceError, StoreError
from applianced.expiry import ExpiryTimer
from applianced.foundlines import FoundLines
from applianced.health import Health
from applianced.hostnames import HostLookups, Resolver
from applianced.latency import LatencyHistogram
from applianced.receiver.edge import ReceiverStats
from applianced.receiver.senders import SenderBook
from applianced.reconcile import InThread, Reconciler
from applianced.recovery import adopted_rows
from applianced.restore import gc_paused, restorable
from applianced.rules.decision import (
    Ban,
    BanDecision,
    BanKind,
    IPAddress,
    IPNetwork,
    Lookup,
    Offence,
)
from applianced.rules.engine import CountedFailure, Engine
from applianced.rules.jail import Jail, decide, jail_filter
from applianced.rules.message import SyslogMessage
from applianced.silence import SilenceWatch
from applianced.stats import Stats, jail_figures
from applianced.store.base import BanRow, OffenderStore, ban_from_row
from applianced.storewrites import StoreWrites
from applianced.units import plural

__all__ = ["Appliance", "RequestError"]

log = Logger()


class RequestError(ApplianceError):
    """An operator's request cannot be carried out (unknown jail, ignored address, ...)."""


class Appliance:
    """The running appliance's state. Call ``start`` before feeding messages."""

    def __init__(
        self,
        config: Config,
        store: OffenderStore,
        enforcer: Enforcer,
        clock: IReactorTime,
        own_addresses: Iterable[IPNetwork] = (),
        receiver_stats: ReceiverStats | None = None,
        rng: random.Random | None = None,
        resolver: Resolver | None = None,
        notifier: BanNotifier | None = None,
        engine: Engine | None = None,
        cluster: Callable[[], dict[str, Any]] | None = None,
        in_thread: InThread | None = None,
        senders: SenderBook | None = None,
    ) -> None:
        """``engine``: one with its cluster hook (a fresh one without); ``cluster``: the
        replicator's status, shown by status (cluster mode); ``in_thread``: runs the
        reconcile's kernel listings off the reactor thread (inline without); ``senders``: the
        book the listeners count in (the engine counts its unmatched messages there)."""
        self.config = config
        self.store = store
        self.enforcer = enforcer
        self.clock = clock
        self.own_addresses = tuple(own_addresses)
        self.receiver_stats = receiver_stats or ReceiverStats()
        self.rng = rng or random.Random()
        self.notifier = notifier  # told of NEW bans only (not restored ones); it only queues
        self.senders = senders if senders is not None else SenderBook()
        self.engine = engine if engine is not None else Engine(on_unmatched=self.senders.unmatched)
        self._silence = SilenceWatch(clock, self.senders, notifier)
        self.health = Health()
        self.batcher = Batcher(enforcer, clock, self.health, self._wanted)
        self._writes = StoreWrites(store, clock, self.health)
        self._lookups = (
            None if resolver is None else HostLookups(resolver, self.health, self._found, clock)
        )
        # Copied by stats() for status and the metrics: new bans per (jail, kind); the time from
        # the deciding message to the kernel, one sample per ban, fed once per batch.
        self.bans_by_kind: dict[tuple[str, str], int] = {}
        self.ban_latency = LatencyHistogram()
        self.active = BanBook()
        self._pending: list[Offence] = []
        self._flush_call: IDelayedCall | None = None
        self._lines = BanLines(clock)
        self._found_lines = FoundLines(clock)
        self._expiry = ExpiryTimer(clock, self.active.next_expiry, self._expire)
        self._reconcile = Reconciler(
            clock,
            enforcer,
            self.active,
            self._resync,
            self.batcher.refused,
            self.health,
            config.enforcement.reconcile_interval,
            in_thread,
        )
        self.started_at = clock.seconds()
        self.cluster = cluster

    # -- life cycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Build the enforcer's tables, record what expired while we were down, restore every
        active ban. Must finish before the listeners open."""
        with gc_paused():
            self._start()

    def _start(self) -> None:
        now = self.clock.seconds()
        self._install_jails(self.config)
        rows = restorable(self.store, self.engine.jails, now, self._writes.end)
        elements = self.enforcer.elements(now)
        never_ban = {name: jail.never_ban for name, jail in self.engine.jails.items()}
        recovered = adopted_rows(
            elements, rows, self.store.last_ends, self._writes.record, now, never_ban
        )
        self.health.recovered += len(recovered)
        active = self._restore([*rows, *recovered], now)
        log.info(
            "restored {bans} into the {backend} backend",
            count=len(active),
            bans=plural(len(active), "active ban"),
            backend=self.enforcer.name,
        )
        self._expiry.schedule()
        self._reconcile.start()
        self._silence.watch(self.config.sender_silence, self.config.allowed_hosts)

    def _restore(self, rows: Sequence[BanRow], now: float) -> list[Ban]:
        """Put the active bans in the enforcer and in the book; returns them."""
        return self.batcher.restore(
            lambda: self._track(rows),
            lambda: [Restored(jail, net, ends) for jail, net, _, ends, _, _ in rows],
            now,
        )

    def _resync(self) -> None:
        """The reconcile's repair: the table set up again (a deleted one is made anew), then
        the book restored into it."""
        self.enforcer.setup([JailRules.of(j) for j in self.config.enabled_jails])
        bans = list(self.active.values())
        self.batcher.restore(
            lambda: bans,
            lambda: [Restored(b.jail, str(b.network), b.expires_at) for b in bans],
            self.clock.seconds(),
        )

    def _track(self, rows: Sequence[BanRow]) -> list[Ban]:
        """The rows' Bans, now the active ones."""
        active = [ban_from_row(r) for r in rows]
        self.active.reset(active)
        return active

    def stop(self) -> None:
        if self._flush_call is not None and self._flush_call.active():
            self._flush_call.cancel()
        self._expiry.stop()
        self._silence.stop()
        self._reconcile.stop()
        self.batcher.stop()
        if self.notifier is not None:
            self.notifier.stop()
        if self._pending:
            self._flush()
        self._writes.stop()
        self._lines.close()
        self._found_lines.close()
        if self._lookups is not None:
            self._lookups.close()
        if self.config.enforcement.on_stop == "flush":
            self.enforcer.flush()
            log.info(
                "on_stop = flush: removed every ban from the {backend} backend",
                backend=self.enforcer.name,
            )
        else:
            self._log_kept()
        self.enforcer.close()
        self.store.close()

    def _log_kept(self) -> None:
        """The stop line of ``on_stop = keep``: what stays enforced, and until when."""
        bans = self.active.values()
        permanent = sum(1 for b in bans if b.permanent)
        if self.enforcer.name == MemoryEnforcer.name:
            log.info(
                "stopping; dry run: {count} active bans were enforced nowhere; the next "
                "start restores every active one from the store",
                count=len(bans),
            )
            return
        log.info(
            "stopping; {count} active bans stay in the {backend} backend ({permanent} "
            "permanent): each temporary one ends by its own timeout there, and the next start "
            "restores every active one from the store",
            count=len(bans),
            permanent=permanent,
            backend=self.enforcer.name,
        )

    def reload(self, config: Config) -> None:
        """Switch to ``config``: new jails start, removed jails stop (their bans leave the
        enforcer, their history stays), kept jails keep their windows and bans. A jail that
        starts enforces the store's active bans of its name (a jail disabled then enabled
        again; in cluster mode, the cluster's bans this appliance holds for it)."""
        before = set(self.engine.jails)
        self.config = config
        self._install_jails(config)
        if self.notifier is not None:
            self.notifier.reconfigure(config)
        self.active.keep_jails(self.engine.jails)
        self._silence.watch(config.sender_silence, config.allowed_hosts)
        started = set(self.engine.jails) - before
        if started:
            self._enforce_stored(started)
        self._reconcile.interval = config.enforcement.reconcile_interval
        self._reconcile.start()
        self._reconcile.check()

    def _enforce_stored(self, jails: set[str]) -> None:
        """The store's active bans of ``jails`` into the book and the enforcer."""
        now = self.clock.seconds()
        try:
            rows = restorable(self.store, jails, now, self._writes.end)
        except StoreError as e:
            self._store_failed(e)
            return
        bans = [ban_from_row(r) for r in rows]
        self.active.add(bans)
        if bans:
            self.batcher.send(bans, ())
            log.info(
                "{count} active bans of the jails enabled again ({jails}) are enforced",
                count=len(bans),
                jails=", ".join(sorted(jails)),
            )
        self._expiry.schedule()

    def _install_jails(self, config: Config) -> None:
        # An allowed sender is protected, but "any sender" (a /0) must not protect everyone.
        senders = (n for n in config.allowed_senders if n.prefixlen > 0)
        never_ban = (*senders, *self.own_addresses)
        jails = [Jail(conf, jail_filter(conf), never_ban) for conf in config.enabled_jails]
        self.engine.set_jails(jails)
        self.enforcer.setup([JailRules.of(j) for j in config.enabled_jails])

    # -- the hot path -----------------------------------------------------------------------

    def receive(self, message: SyslogMessage) -> None:
        """The listeners' sink: run the jails; offences are settled at the end of this turn."""
        for item in self.engine.feed(message, message.received_at):
            if isinstance(item, Offence):
                self._settle_later(item)
            elif isinstance(item, Lookup):
                if self._lookups is not None:
                    self._lookups.lookup(item)
            else:
                self._found_lines.found(item, message.received_at)

    def _settle_later(self, offence: Offence) -> None:
        self._pending.append(offence)
        if self._flush_call is None:
            self._flush_call = self.clock.callLater(0, self._flush)

    def _found(self, lookup: Lookup, addresses: Sequence[IPAddress]) -> None:
        """A hostname failure's addresses (usedns jails): each counts as a failure."""
        now = self.clock.seconds()
        for address in addresses:
            offence = self.engine.resolved(lookup, address, now)
            if offence is not None:
                self._settle_later(offence)

    def _flush(self) -> None:
        """Settle the offences of one reactor turn: decide, store (one transaction), enforce
        (one batch)."""
        self._flush_call = None
        pending, self._pending = self._pending, []
        by_jail, skipped = self.active.unbanned(pending, self.engine.jails)
        self.health.skipped_already_banned += skipped
        decisions = []
        for name, offences in by_jail.items():
            conf = self.engine.jails[name].conf
            prior = self._prior(conf, [o.network for o in offences], offences[0].at)
            for offence in offences:
                jitter = self.rng.uniform(0, conf.bantime_jitter) if conf.bantime_jitter else 0.0
                decisions.append(decide(conf, offence, prior.get(offence.network, 0), jitter))
        if decisions:
            self._commit(decisions, measure=True)

    def _prior(self, conf: JailConf, networks: Sequence[IPNetwork], now: float
               ) -> dict[IPNetwork, int]:  # fmt: skip
        try:
            return self.store.prior_bans(conf.name, networks, now - conf.findtime_history)
        except StoreError as e:
            self._store_failed(e)
            return {}

    def _commit(
        self, decisions: Sequence[BanDecision], measure: bool = False, share: bool = True
    ) -> list[Ban]:
        """Enforce, then record, then report. The kernel goes first because the attacker is
        still knocking: the store's commit (a few ms for a storm's batch, its lines included)
        is not on the path to the drop. Nothing is reported (logged, listed, mailed) before
        the store write is made or, refused, kept for its retry (``storewrites.py``); a crash
        in the millisecond between the two leaves bans only the kernel holds, which the next
        start adopts (``recovery.py``).
        ``measure``: the decisions come from messages; their latency goes to ``ban_latency``,
        and their log lines count against the per-second budget (an operator's ban is always
        logged).
        ``share``: cluster mode, the bans go to the other appliances (not for ``--local``)."""
        bans = [Ban.from_decision(d) for d in decisions]
        replaced = [self.active[k] for b in bans if (k := (b.jail, b.network)) in self.active]
        if self.batcher.send(bans, replaced) and measure:
            self.ban_latency.observe_bans(self.clock.seconds(), decisions)
        if measure:
            self.senders.led_to_bans(d.lines for d in decisions)
        self._writes.record(decisions, share)
        now = self.clock.seconds()
        self.active.add(bans)
        self._lines.banned(bans, [d.deciding_line for d in decisions], now, budgeted=measure)
        self.health.bans_total += len(bans)
        by_kind = self.bans_by_kind
        for ban in bans:
            key = (ban.jail, str(ban.kind))
            by_kind[key] = by_kind.get(key, 0) + 1
        if self.notifier is not None:
            for ban, decision in zip(bans, decisions, strict=True):
                self.notifier.banned(ban, decision.lines)
        self._expiry.schedule()
        return bans

    def _wanted(self, ban: Ban) -> bool:
        """Whether ``ban`` is still the active one (not lifted or expired meanwhile)."""
        return self.active.get((ban.jail, ban.network)) == ban

    def _store_failed(self, error: StoreError) -> None:
        """A read of the store failed (writes are ``StoreWrites``'): counted and logged."""
        self.health.store_errors += 1
        self.health.last_error = f"store: {error}"
        log.error(
            "reading the offenders store failed; repeat counts and a jail's stored bans "
            "are missing from this decision: {error}",
            error=str(error),
        )

    # -- cluster mode -----------------------------------------------------------------------

    def adopt(self, bans: Sequence[Ban], ended: Sequence[Ban]) -> None:
        """Apply other appliances' changes, already in the store: ``bans`` start here with
        their own expiry (replacing an older ban of the same jail and network), ``ended``
        are lifted when they are the active ban. One enforcer batch; nothing is mailed."""
        fresh, lifted = adopted(self.active, bans, ended, self.engine.jails, self.clock.seconds())
        self.active.lift(lifted)
        self.active.add(fresh)
        self._lines.adopted(fresh, lifted, self.clock.seconds())
        self.health.unbans_total += len(lifted)
        if fresh or lifted:
            self.batcher.send(fresh, lifted)
        self._expiry.schedule()

    def remote_failures(self, failures: Sequence[CountedFailure]) -> None:
        """Count other appliances' failures (``share_failures``) in the jails of the same
        name, received now by our clock; an offence they complete is settled like ours."""
        now = self.clock.seconds()
        for failure in failures:
            offence = self.engine.count_remote(failure, now)
            if offence is not None:
                self._settle_later(offence)

    # -- expiry -----------------------------------------------------------------------------

    def _expire(self) -> None:
        """The expiry timer's call: end the bans that are due."""
        due = self.active.due(self.clock.seconds())
        if due:
            self._end(due, "expired")
            self.health.expired_total += len(due)

    def _end(self, bans: Sequence[Ban], reason: str, share: bool = True) -> None:
        self._writes.end(bans, self.clock.seconds(), reason, share)
        self._lines.ended(bans, reason)
        self.batcher.send((), bans)

    # -- operator requests (control socket) -------------------------------------------------

    def jail_conf(self, name: str) -> JailConf:
        jail = self.engine.jails.get(name)
        if jail is None:
            known = ", ".join(sorted(self.engine.jails)) or "none"
            raise RequestError(f"unknown or disabled jail {name!r}; enabled jails: {known}")
        return jail.conf

    def check_bannable(self, network: IPNetwork, jail: str) -> None:
        """Refuse a network that covers anything the jail must never ban."""
        for protected in self.engine.jails[jail].never_ban:
            if network.overlaps(protected):
                raise RequestError(
                    f"{network} is protected in jail {jail} (it overlaps {protected}: ignoreip, "
                    "an allowed syslog sender or the appliance's own address); refusing to ban it"
                )

    def ban(
        self,
        jail: str,
        network: IPNetwork,
        duration: float | None = None,
        permanent: bool = False,
        *,
        local: bool = False,
    ) -> Ban:
        """A manual ban (or a blacklist entry when ``permanent``) of ``network``; in cluster
        mode on every appliance unless ``local``."""
        conf = self.jail_conf(jail)
        self.check_bannable(network, jail)
        now = self.clock.seconds()
        prior = self._prior(conf, [network], now).get(network, 0)
        decision = BanDecision(
            jail=jail,
            network=network,
            duration=None if permanent else (duration if duration is not None else conf.bantime),
            kind=BanKind.BLACKLIST if permanent else BanKind.MANUAL,
            count=prior + 1,
            at=now,
            lines=("[appliancectl] manual " + ("blacklist entry" if permanent else "ban"),),
        )
        return self._commit([decision], share=not local)[0]

    def unban(
        self,
        network: IPNetwork,
        jail: str | None = None,
        *,
        permanent_only: bool = False,
        local: bool = False,
    ) -> list[Ban]:
        """Lift every active ban overlapping ``network`` (in ``jail``, or in every jail) and
        return them (none: an empty list); in cluster mode on every appliance unless
        ``local``."""
        if jail is not None:
            self.jail_conf(jail)
        found = self.active.overlapping(network, jail, permanent_only)
        if found:
            self.active.lift(found)
            self.health.unbans_total += len(found)
            self._end(found, "unban", share=not local)
        return found

    def flush(self, jail: str | None = None) -> list[Ban]:
        """Lift every active ban (blacklist included), in one jail or in all."""
        if jail is not None:
            self.jail_conf(jail)
        found = self.active.of_jail(jail)
        self.active.lift(found)
        self.health.unbans_total += len(found)
        self._end(found, "flush")
        return found

    def banned(self, jail: str | None = None) -> list[Ban]:
        return sorted(self.active.of_jail(jail), key=lambda b: (b.jail, b.started_at))

    def stats(self) -> Stats:
        """The figures of this instant, for status and the metrics (a copy)."""
        now = self.clock.seconds()
        return Stats(
            uptime=now - self.started_at,
            backend=self.enforcer.name,
            jails=jail_figures(self.engine.jails, self.active.values()),
            receiver=replace(self.receiver_stats),
            health=replace(self.health),
            bans_by_kind=dict(self.bans_by_kind),
            latency_buckets=tuple(self.ban_latency.cumulative()),
            latency_sum=self.ban_latency.sum,
            notify=self.notifier.status() if self.notifier is not None else None,
            cluster=self.cluster() if self.cluster is not None else None,
            senders=self.senders.snapshot(),
            senders_other=replace(self.senders.other),
            senders_dropped=self.senders.dropped,
        )
