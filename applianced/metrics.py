"""Prometheus metrics: what the appliance counts, in the text format, on an optional HTTP port.

The hot path makes no Prometheus call. The receiver, the jails and the appliance already keep
plain integer counters (``ReceiverStats``, ``JailStats``, ``Health``); the
``ApplianceCollector`` reads their snapshot (``Appliance.stats()``, ``stats.py``) when
Prometheus scrapes, so a message costs what it cost
before. The one number that has no counter elsewhere, the ban latency, is a ``LatencyHistogram``
(``latency.py``) the appliance feeds once per kernel batch. The kernel's elements per set are
the one figure read from outside at scrape time: ``KernelElements`` lists them (as ``status``
does, about 0.9 s of CPU per 100,000 elements) in a worker thread before the scrape is
rendered, and reuses a listing while it is younger than 50 times what it cost (at most two
minutes), so the listing takes at most 2% of a core whatever the scrape interval; the scrape
says the listing's age.

``service.py`` imports this module only when ``[metrics] enabled = true`` (prometheus-client and
twisted.web are a tenth of a second of start-up), builds the registry (its own
``CollectorRegistry``, never the global one, so that tests and several appliances in one process
stay apart) and starts ``MetricsService``: ``GET /metrics`` on ``address:port`` (loopback by
default), through ``weblimits.py``'s caps on connections and request bodies.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.utils import floatToGoString
from twisted.application.service import Service
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IListeningPort, IReactorTime
from twisted.python.failure import Failure
from twisted.web import http
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

from applianced import __version__
from applianced.rules.decision import BanKind
from applianced.weblimits import Capped, QuietSite

if TYPE_CHECKING:
    from applianced.appliance import Appliance
    from applianced.conf.schema import MetricsConf
    from applianced.enforcement.base import Enforcer
    from applianced.receiver.edge import ReceiverStats
    from applianced.stats import Stats

__all__ = [
    "ApplianceCollector",
    "KernelElements",
    "MetricsResource",
    "MetricsService",
    "make_registry",
]


class ApplianceCollector:
    """Reads the appliance's stats snapshot (``stats.py``) at scrape time and turns it into
    metric families.

    Counters (``_total``) count since the daemon started; a jail created by a reload starts at
    zero, a jail kept across a reload keeps its counts. Gauges are the state at the scrape.
    """

    def __init__(self, appliance: Appliance) -> None:
        self.appliance = appliance

    def collect(self) -> Iterator[Metric]:
        app = self.appliance.stats()
        yield _build_info()
        yield from _receiver(app.receiver)
        yield from _connections(app.receiver)
        yield from _jails(app)
        yield from _bans(app)
        yield from _health(app)
        yield from _notify_and_cluster(app)
        yield from _senders(app)


def _build_info() -> Metric:
    info = GaugeMetricFamily(
        "applianced_build_info",
        "Always 1: the daemon's version and its Python's, as labels.",
        labels=["version", "python"],
    )
    info.add_metric([__version__, platform.python_version()], 1)
    return info


def _receiver(r: ReceiverStats) -> Iterator[Metric]:
    """What the listeners received, dropped and refused."""
    yield _counters(
        "applianced_messages_received",
        "Syslog messages received and read (parsed, or dropped by the routing gate), per "
        "transport.",
        "transport",
        {"udp": r.received_udp, "tcp": r.received_tcp, "tls": r.received_tls},
    )
    yield _counters(
        "applianced_messages_gated",
        "Received messages no jail can match, dropped before any parse: of a program no "
        "jail reads (unread), or holding none of its jails' literals (no_literal).",
        "reason",
        {"unread": r.gated_unread, "no_literal": r.gated_no_literal},
    )
    yield _counter(
        "applianced_tls_refused",
        "TLS peers refused: failed handshake or a client certificate not accepted.",
        r.tls_refused,
    )
    yield _counter("applianced_parse_errors", "Messages dropped as unparsable.", r.parse_errors)
    yield _counter("applianced_frame_errors", "Bad TCP syslog frames (RFC 6587).", r.frame_errors)
    yield _counter(
        "applianced_oversize_messages",
        "Messages and TCP frames dropped for exceeding max_message_size.",
        r.oversize,
    )
    yield _counter(
        "applianced_refused_senders",
        "Datagrams and connections dropped because the sender is not in allowed_senders.",
        r.refused_senders,
    )
    yield _counter(
        "applianced_udp_kernel_drops",
        "Datagrams the kernel dropped on the UDP listeners' sockets, their receive buffer "
        "(rcvbuf) full, before the daemon read them.",
        r.udp_kernel_drops,
    )


def _connections(r: ReceiverStats) -> Iterator[Metric]:
    """The TCP/TLS connections: accepted, refused at a limit, closed at a deadline."""
    yield _counter("applianced_tcp_connections", "Syslog TCP connections accepted.", r.connections)
    yield _counter(
        "applianced_rate_limited_messages",
        "Messages dropped for exceeding their sender's max_rate_per_sender.",
        r.rate_limited,
    )
    yield _counters(
        "applianced_refused_connections",
        "Connections refused at a limit: max_connections (total), "
        "max_connections_per_sender (sender), the descriptor budget of all listeners "
        "(descriptors).",
        "limit",
        {
            "total": r.refused_connections_total,
            "sender": r.refused_connections_sender,
            "descriptors": r.refused_connections_descriptors,
        },
    )
    yield _counter(
        "applianced_handshake_timeouts",
        "TLS connections closed without a finished handshake after handshake_timeout.",
        r.handshake_timeouts,
    )
    yield _counter(
        "applianced_first_frame_timeouts",
        "Syslog connections closed without a whole frame after first_frame_timeout.",
        r.first_frame_timeouts,
    )
    yield _counter(
        "applianced_evicted_pending_connections",
        "Syslog connections that had sent no whole frame, closed (oldest first) to make "
        "room for a new one at max_connections.",
        r.evicted_pending,
    )
    yield _counter(
        "applianced_idle_timeouts",
        "Syslog connections closed after idle_timeout without a byte.",
        r.idle_timeouts,
    )
    yield GaugeMetricFamily(
        "applianced_open_connections",
        "Syslog TCP connections open now.",
        value=r.open_connections,
    )


def _jails(app: Stats) -> Iterator[Metric]:
    """Each jail's failures and tracked addresses."""
    jails = app.jails
    failures = CounterMetricFamily(
        "applianced_failures",
        "Failures matched by a jail's failregex (ignored addresses not included).",
        labels=["jail"],
    )
    ignored = CounterMetricFamily(
        "applianced_ignored_failures",
        "Failures from addresses the jail never bans (ignoreip, senders, own addresses).",
        labels=["jail"],
    )
    tracked = GaugeMetricFamily(
        "applianced_tracked_addresses",
        "Addresses (IPv6: prefixes) with failures in the jail's window; at most max_tracked.",
        labels=["jail"],
    )
    evictions = CounterMetricFamily(
        "applianced_evictions",
        "Tracked addresses dropped to stay within max_tracked (one-failure ones first).",
        labels=["jail"],
    )
    unmatched = CounterMetricFamily(
        "applianced_unmatched_messages",
        "Messages a jail read (its programs) and found no failure in, per program as the "
        "jail's programs name it (a glob for every program it reads).",
        labels=["jail", "program"],
    )
    for name, jail in sorted(jails.items()):
        failures.add_metric([name], jail.matched)
        ignored.add_metric([name], jail.ignored)
        tracked.add_metric([name], jail.tracked)
        evictions.add_metric([name], jail.evicted)
        for program, n in sorted(jail.unmatched.items()):
            unmatched.add_metric([name, program], n)
    yield from (failures, ignored, tracked, evictions, unmatched)


def _bans(app: Stats) -> Iterator[Metric]:
    """Bans made since start and bans in force, per jail and kind."""
    jails = app.jails
    bans = CounterMetricFamily(
        "applianced_bans",
        "Bans made since start, per jail and kind (auto, manual, blacklist); restored bans "
        "are not counted.",
        labels=["jail", "kind"],
    )
    for (jail_name, kind), n in sorted(app.bans_by_kind.items()):
        bans.add_metric([jail_name, kind], n)
    yield bans
    active_counts = {
        (name, str(kind)): jail.active.get(kind.value, 0)
        for name, jail in jails.items()
        for kind in BanKind
    }
    active = GaugeMetricFamily(
        "applianced_active_bans",
        "Bans in force now (restored ones included), per jail and kind.",
        labels=["jail", "kind"],
    )
    for (jail_name, kind), n in sorted(active_counts.items()):
        active.add_metric([jail_name, kind], n)
    yield active


def _health(app: Stats) -> Iterator[Metric]:
    """The kernel's and the store's health, expiries, the ban latency."""
    h = app.health
    yield _counter(
        "applianced_enforcement_errors",
        "Kernel (nftables) transactions that failed; their changes are retried.",
        h.enforcement_errors,
    )
    yield GaugeMetricFamily(
        "applianced_enforcement_unapplied",
        "Bans and unbans waiting for a retried kernel transaction.",
        value=h.unapplied,
    )
    yield _counter(
        "applianced_enforcement_refused_elements",
        "Elements the kernel refused on their own (the rest of their batch applied); not "
        "sent again until the next start.",
        h.refused_elements,
    )
    yield _counter(
        "applianced_store_errors", "Failed writes to the offenders store.", h.store_errors
    )
    yield GaugeMetricFamily(
        "applianced_store_pending",
        "Rows (bans, ends) waiting in memory for the offenders store to accept writes.",
        value=h.store_pending,
    )
    yield _counter(
        "applianced_store_dropped",
        "Rows dropped while waiting for the offenders store (their bans stay enforced).",
        h.store_dropped,
    )
    yield _counter(
        "applianced_reconcile_repairs",
        "Times the kernel's sets were found drifted from the active bans and restored.",
        h.reconcile_repairs,
    )
    yield _counter(
        "applianced_reconcile_missing",
        "Bans the kernel had lost (a set flushed by another tool), put back by a reconcile.",
        h.reconcile_missing,
    )
    yield _counter(
        "applianced_reconcile_unknown",
        "Kernel elements no active ban accounted for, removed by a reconcile.",
        h.reconcile_unknown,
    )
    yield _counter(
        "applianced_recovered_bans",
        "Kernel elements the offenders store lacked, adopted at start.",
        h.recovered,
    )
    yield _counter("applianced_unbans", "Bans lifted by unban or flush.", h.unbans_total)
    yield _counter("applianced_expired_bans", "Bans that expired.", h.expired_total)
    yield _counter(
        "applianced_bouncer_pulls",
        "Decision stream requests of CrowdSec bouncers answered ([decisions]).",
        h.bouncer_pulls,
    )
    yield _counter(
        "applianced_bouncer_refused",
        "Decision stream requests refused: a missing or wrong X-Api-Key.",
        h.bouncer_refused,
    )
    yield _counter(
        "applianced_bouncer_connections_refused",
        "Decision stream connections closed at once (over its caps) and requests refused "
        "for their body.",
        h.bouncer_connections_refused,
    )

    yield HistogramMetricFamily(
        "applianced_ban_latency_seconds",
        "From receipt of the message that decided a ban to the return of the kernel "
        "transaction that enforced it.",
        buckets=[(floatToGoString(le), float(n)) for le, n in app.latency_buckets],
        sum_value=app.latency_sum,
    )


def _notify_and_cluster(app: Stats) -> Iterator[Metric]:
    """Ban mails, and cluster mode when on."""
    status: dict[str, Any] = app.notify or {}
    yield GaugeMetricFamily(
        "applianced_notify_backlog",
        "Bans waiting to be mailed (single mails and the next digest).",
        value=status.get("backlog", 0),
    )
    yield _counter(
        "applianced_notify_dropped",
        "Ban notifications dropped (backlog full or mail refused).",
        status.get("dropped", 0),
    )
    yield _counter(
        "applianced_mails_sent",
        "Ban mails delivered (single mails and digests).",
        status.get("sent", 0),
    )
    yield _counters(
        "applianced_mails_failed",
        "Ban mail deliveries that failed: retried later (temporary) or refused by the server "
        "(5xx, the mail dropped).",
        "outcome",
        {"retried": status.get("failed_attempts", 0), "refused": status.get("rejected", 0)},
    )
    cluster = app.cluster
    if cluster is not None:  # cluster mode (applianced/cluster/)
        yield GaugeMetricFamily(
            "applianced_cluster_connected",
            "1 while the cluster database is reachable, 0 while bans are only local.",
            value=int(cluster["connected"]),
        )
        yield GaugeMetricFamily(
            "applianced_cluster_backlog",
            "Changes of this appliance waiting to be pushed to the cluster database.",
            value=cluster["backlog"],
        )
        yield GaugeMetricFamily(
            "applianced_cluster_heartbeat_age_seconds",
            "Seconds since this appliance's last heartbeat went through to the cluster database"
            " (grows while the database does not answer; -1 before the first).",
            value=-1 if cluster["heartbeat_age"] is None else cluster["heartbeat_age"],
        )
        yield _counter(
            "applianced_cluster_adopted",
            "Bans and unbans received from the cluster and applied here.",
            cluster["adopted"],
        )


# Senders with a label of their own in the per-sender families: the watched ones first, then
# those with the most messages; the others are summed under sender="other".
METRIC_SENDERS = 50


def _senders(app: Stats) -> Iterator[Metric]:
    """Each sender's figures (label cardinality capped at METRIC_SENDERS, the rest in
    "other"), and 1 for each watched sender silent now (sender_silence), 0 for the others."""
    ranked = sorted(app.senders, key=lambda s: (s.silence is None, -s.messages))
    other = replace(app.senders_other)
    for sender in ranked[METRIC_SENDERS:]:
        other.add(sender)
    shown = [*ranked[:METRIC_SENDERS], other]
    for field, doc in (
        ("messages", "Messages received from each syslog sender."),
        ("parse_errors", "Unparsable messages from each syslog sender."),
        ("unmatched", "Messages of each sender that reached a jail and matched no failregex."),
        ("bans", "Bans decided on failures that include a message of each sender."),
    ):
        family = CounterMetricFamily(f"applianced_sender_{field}", doc, labels=["sender"])
        for sender in shown:
            family.add_metric([sender.address], getattr(sender, field))
        yield family
    seen = GaugeMetricFamily(
        "applianced_sender_last_seen_timestamp_seconds",
        "When each syslog sender's last message arrived (POSIX seconds); none before its first.",
        labels=["sender"],
    )
    for sender in shown:
        if sender.last_seen is not None:
            seen.add_metric([sender.address], sender.last_seen)
    yield seen
    silent = GaugeMetricFamily(
        "applianced_sender_silent",
        "1 while a watched syslog sender (sender_silence) has sent nothing for its silence.",
        labels=["sender"],
    )
    for sender in app.senders:
        if sender.silence is not None:
            silent.add_metric([sender.address], int(sender.silent_since is not None))
    yield silent


def _counter(name: str, documentation: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, documentation, value=value)


def _counters(
    name: str, documentation: str, label: str, values: Mapping[str, float]
) -> CounterMetricFamily:
    """A counter family with one sample per value of ``label``."""
    family = CounterMetricFamily(name, documentation, labels=[label])
    for value, count in values.items():
        family.add_metric([value], count)
    return family


# A listing is reused while younger than its CPU cost divided by this share (0.9 s of CPU
# for 100,000 elements: 45 s), never longer than LISTING_MAX_AGE.
LISTING_SHARE = 0.02
LISTING_MAX_AGE = 120.0


class KernelElements:
    """The elements in each of the enforcer's sets, as of the last listing: ``refresh`` runs
    one in ``in_thread`` (a worker thread in the daemon) before a scrape (``MetricsResource``)
    unless the last is young enough for what it cost; scrapes that come meanwhile wait for the
    same listing."""

    def __init__(
        self,
        enforcer: Enforcer,
        clock: IReactorTime,
        in_thread: Callable[[Callable[[], tuple[Mapping[str, int], float]]], Deferred[Any]],
    ) -> None:
        self.enforcer = enforcer
        self.clock = clock
        self.in_thread = in_thread
        self.counts: Mapping[str, int] = {}
        self.listed_at: float | None = None
        self.cost = 0.0  # CPU seconds of the last listing
        self._waiting: list[Deferred[None]] | None = None  # a listing runs

    def refresh(self) -> Deferred[None]:
        """Fires when the counts are recent enough (a failed listing: its failure)."""
        age = None if self.listed_at is None else self.clock.seconds() - self.listed_at
        if age is not None and age < min(LISTING_MAX_AGE, self.cost / LISTING_SHARE):
            return succeed(None)
        waiter = Deferred[None]()
        if self._waiting is not None:
            self._waiting.append(waiter)
        else:
            self._waiting = [waiter]
            self.in_thread(self._list).addBoth(self._listed)
        return waiter

    def _list(self) -> tuple[Mapping[str, int], float]:
        started = time.thread_time()
        counts = self.enforcer.set_counts()
        return counts, time.thread_time() - started

    def _listed(self, result: tuple[Mapping[str, int], float] | Failure) -> None:
        waiting, self._waiting = self._waiting or [], None
        if not isinstance(result, Failure):
            self.counts, self.cost = result
            self.listed_at = self.clock.seconds()
        for waiter in waiting:
            if isinstance(result, Failure):
                waiter.errback(result)
            else:
                waiter.callback(None)

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            "applianced_kernel_elements",
            "Elements in each of our nftables sets at the last listing (expired ones gone): "
            "JAIL_v4, JAIL_v6 (hosts), JAIL_p64_v6 (IPv6 /64s), JAIL_net_v4/_v6 (other "
            "networks), and JAIL_bl_* (the blacklist); none on --dry-run.",
            labels=["set"],
        )
        for name, n in sorted(self.counts.items()):
            family.add_metric([name], n)
        yield family
        if self.listed_at is not None:
            yield GaugeMetricFamily(
                "applianced_kernel_elements_age_seconds",
                "Seconds since the kernel listing that applianced_kernel_elements shows (a "
                "listing is reused while younger than 50 times its CPU cost, at most 120 s).",
                self.clock.seconds() - self.listed_at,
            )


def make_registry(
    appliance: Appliance, process: bool = True, kernel: KernelElements | None = None
) -> CollectorRegistry:
    """A registry of its own (not prometheus_client's global one) with the appliance's
    metrics, the kernel's elements when ``kernel``, and the process's memory, CPU and file
    descriptors when ``process``."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ApplianceCollector(appliance))
    if kernel is not None:
        registry.register(kernel)
    if process:
        ProcessCollector(registry=registry)
    return registry


class MetricsResource(Resource):
    """``GET /metrics``: the registry in the Prometheus text format; ``before``, when given,
    runs first (the kernel's listing, in a thread) and the answer waits for it."""

    isLeaf = True

    def __init__(
        self, registry: CollectorRegistry, before: Callable[[], Deferred[None]] | None = None
    ) -> None:
        super().__init__()
        self.registry = registry
        self.before = before

    def render_GET(self, request: Request) -> bytes | int:
        request.setHeader(b"Content-Type", CONTENT_TYPE_LATEST.encode("ascii"))
        if self.before is None:
            return generate_latest(self.registry)

        def answer(_: object) -> None:
            request.write(generate_latest(self.registry))
            request.finish()

        def failed(reason: Failure) -> None:
            request.setResponseCode(http.INTERNAL_SERVER_ERROR)
            request.write(f"cannot read the kernel's sets: {reason.getErrorMessage()}\n".encode())
            request.finish()

        self.before().addCallbacks(answer, failed)
        return NOT_DONE_YET


class MetricsService(Service):
    """Listens on ``[metrics] address:port`` (TCP) while running; started after the control
    socket, so a busy port stops the daemon at start with a clear error."""

    def __init__(
        self,
        conf: MetricsConf,
        registry: CollectorRegistry,
        reactor: Any,
        before: Callable[[], Deferred[None]] | None = None,
    ) -> None:
        self.conf = conf
        self.registry = registry
        self.reactor = reactor
        self.before = before
        self.port: IListeningPort | None = None

    def site(self) -> Site:
        root = Resource()
        root.putChild(b"metrics", MetricsResource(self.registry, self.before))
        return QuietSite(root, self.reactor, lambda: None)

    def startService(self) -> None:
        """Bind (within weblimits' connection caps); raises CannotListenError."""
        self.port = self.reactor.listenTCP(
            self.conf.port, Capped(self.site(), lambda: None), interface=self.conf.address
        )
        super().startService()

    def stopService(self) -> Deferred[None] | None:
        super().stopService()
        port, self.port = self.port, None
        return port.stopListening() if port is not None else None
