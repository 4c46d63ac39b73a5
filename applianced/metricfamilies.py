"""Prometheus metric families: the appliance's stats snapshot (``stats.py``, ``Appliance.stats()``)
as counters, gauges and the ban latency's histogram, read at scrape time.

The hot path makes no Prometheus call: the receiver, the jails and the appliance keep plain
integer counters (``ReceiverStats``, ``JailStats``, ``Health``) and ``ApplianceCollector``
turns their snapshot into families when Prometheus scrapes. Registered by ``metrics.py``'s
``make_registry``; imported only when ``[metrics] enabled = true``.

Over 400 lines, most of them the families' names and help texts: one function per group.
"""

from __future__ import annotations

import platform
from collections.abc import Iterator, Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.utils import floatToGoString

from applianced import __version__
from applianced.rules.decision import BanKind

if TYPE_CHECKING:
    from applianced.appliance import Appliance
    from applianced.health import Health
    from applianced.receiver.edge import ReceiverStats
    from applianced.stats import Stats

__all__ = ["METRIC_SENDERS", "ApplianceCollector"]


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
    yield from _enforcement(app.health)
    yield from _store(app.health)
    yield from _repairs_and_ends(app.health)
    yield from _bouncers(app.health)
    yield HistogramMetricFamily(
        "applianced_ban_latency_seconds",
        "From receipt of the message that decided a ban to the return of the kernel "
        "transaction that enforced it.",
        buckets=[(floatToGoString(le), float(n)) for le, n in app.latency_buckets],
        sum_value=app.latency_sum,
    )


def _enforcement(h: Health) -> Iterator[Metric]:
    """The kernel's transactions: failed, waiting for a retry, elements refused."""
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


def _store(h: Health) -> Iterator[Metric]:
    """The offenders store's writes: failed, waiting in memory, dropped."""
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


def _repairs_and_ends(h: Health) -> Iterator[Metric]:
    """The reconciles' repairs, the bans adopted at start, the bans lifted and expired."""
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


def _bouncers(h: Health) -> Iterator[Metric]:
    """The decision stream's requests: answered, refused for their key or at its caps."""
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
