"""What every listener shares: the counters (``ReceiverStats``, and each sender's in the
``senders.SenderBook``) and the ``Edge`` that checks a sender, delivers its bytes through the
routing gate and the parser to the sink, and complains at a limited rate; the descriptor
budget of all connections; a peer's canonical address.

The UDP protocol (``udp.py``) and the TCP/TLS protocols (``streams.py``) each hold an Edge;
``listeners.py`` builds them. Nothing here raises out of ``deliver``: bad input is counted,
logged at a limited rate and dropped.
"""

from __future__ import annotations

import functools
import resource
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from applianced.conf.schema import ListenerConf
from applianced.errors import ParseError
from applianced.receiver.allowlist import Allowlist
from applianced.receiver.limits import ConnectionLimiter, RateLimiter
from applianced.receiver.parse import Dropped, parse, parse_routed
from applianced.receiver.senders import SenderBook
from applianced.rules.addresses import parse_address
from applianced.rules.engine import Gate
from applianced.rules.message import SyslogMessage

Sink = Callable[[SyslogMessage], None]
# The receiver's one logger (udp.py, streams.py and listeners.py log through it): its lines keep
# the namespace they have always had (the journal shows it).
log = Logger(namespace="applianced.receiver.listeners")

_CANONICAL_CACHE = 4096  # canonical_host's answers; only allowed peers reach it
_LOG_EVERY = 60.0  # seconds between two log lines about the same kind of bad input
# Descriptors held back from syslog connections: the control socket and its clients, the store,
# the kernel's netlink socket, the listeners, logs, metrics and mail. The daemon holds about 20
# of them when idle; the rest is headroom, so that the process never reaches EMFILE.
FD_RESERVE = 64


@dataclass(slots=True)
class ReceiverStats:
    """Counters shared by every listener (since start)."""

    received: int = 0
    received_udp: int = 0  # received, split per transport (metrics)
    received_tcp: int = 0
    received_tls: int = 0
    parse_errors: int = 0
    frame_errors: int = 0
    oversize: int = 0
    refused_senders: int = 0
    tls_refused: int = 0  # TLS peers refused: failed handshake, certificate not accepted
    connections: int = 0
    # Limits (ListenerConf max_*, idle_timeout): what each refused or dropped.
    rate_limited: int = 0  # messages over a sender's max_rate_per_sender
    refused_connections_total: int = 0  # connections over a listener's max_connections
    refused_connections_sender: int = 0  # ... over max_connections_per_sender
    refused_connections_descriptors: int = 0  # ... over the descriptor budget (all listeners)
    # Connections that had sent no whole frame yet (a TLS handshake included), closed to make
    # room for a new one when max_connections was reached: the oldest first.
    evicted_pending: int = 0
    handshake_timeouts: int = 0  # TLS connections closed without a handshake in time
    first_frame_timeouts: int = 0  # connections closed without a whole frame in time
    idle_timeouts: int = 0  # connections closed after idle_timeout without a byte
    open_connections: int = 0  # a gauge: TCP connections open now
    # Received, and dropped by the routing gate before any parse: of a program no jail reads,
    # or holding none of the literals its jails' failregexes need.
    gated_unread: int = 0
    gated_no_literal: int = 0
    # Datagrams the kernel dropped on the UDP listeners' sockets, their receive buffer full
    # (rcvbuf), before the daemon could read them.
    udp_kernel_drops: int = 0


class Stream(Protocol):
    """What the edge asks of an open connection (``streams.SyslogStream``)."""

    host: str

    def release(self) -> None: ...

    def close(self, *, abort: bool = False) -> None: ...

    def rearm(self) -> None: ...


class Edge:
    """What UDP and TCP share: the allowlist check, the routing gate, parse+stamp,
    rate-limited complaints.

    The per-sender rate budget (``max_rate_per_sender``) holds on TCP and TLS only, where the
    handshake proves the sender's address. A datagram's source is unproven: a budget on UDP
    would let a flood forging an allowed sender's address spend it and drop that sender's own
    messages, so UDP relies on ``allowed_senders``, the kernel's reverse-path filter
    (rp_filter), the routing gate and a large receive buffer.

    The gate (``gate``, ``Engine.gate``): a message of the common RFC 3164 shape that no jail
    can match (no jail reads its program, or it holds none of their failregexes' literals) is
    counted as received and dropped before anything is built (``parse_routed``); the engine
    would have found nothing in it. Other shapes (RFC 5424) are parsed, then counted and
    dropped for the same reasons."""

    def __init__(
        self,
        conf: ListenerConf,
        sink: Sink,
        stats: ReceiverStats,
        clock: IReactorTime,
        gate: Gate | None = None,
        senders: SenderBook | None = None,
    ) -> None:
        """``senders``: the book every listener counts its senders in (a book of its own
        when None)."""
        self.conf = conf
        self.sink = sink
        self.gate = gate
        self.stats = stats
        self.clock = clock
        self._reference = (-1, datetime.fromtimestamp(0, UTC))  # (second, that second)
        self.senders = senders if senders is not None else SenderBook()
        self._sender = self.senders.entries.get
        self.name = f"{conf.transport}/{conf.address}:{conf.port}"  # the same on a reload
        self.udp = conf.transport == "udp"
        self.tls = conf.transport == "tls"
        self.allowlist = Allowlist(conf.allowed_senders)
        self._last_complaint: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}
        self.streams: set[Stream] = set()  # open TCP connections, for a reload
        # Those that have not sent a whole frame yet, oldest first: max_connections evicts
        # them before it refuses anyone.
        self.pending: OrderedDict[Stream, None] = OrderedDict()
        self.rate = RateLimiter(conf.max_rate_per_sender, conf.max_burst_per_sender)
        self.connections = ConnectionLimiter(conf.max_connections, conf.max_connections_per_sender)
        self.descriptors = descriptor_limit()  # RLIMIT_NOFILE, read once
        self.budget = connection_budget(self.descriptors)  # of every listener together

    def reconfigure(self, conf: ListenerConf) -> None:
        """A reload changed allowed_senders or max_message_size: apply it from the next
        message on; close the TCP connections of senders no longer allowed."""
        self.conf = conf
        self.allowlist = Allowlist(conf.allowed_senders)
        if (conf.max_rate_per_sender, conf.max_burst_per_sender) != (
            self.rate.rate,
            self.rate.burst,
        ):
            self.rate.reconfigure(conf.max_rate_per_sender, conf.max_burst_per_sender)
        self.connections.max_total = conf.max_connections
        self.connections.max_per_sender = conf.max_connections_per_sender
        # A new connection_prefix_v6 counts new connections; the open ones keep their key.
        # New deadlines hold for the open connections too, from their own start.
        for stream in list(self.streams):
            if stream.host not in self.allowlist:
                self.stats.refused_senders += 1
                stream.close()
            else:
                stream.rearm()

    def allowed(self, host: str) -> bool:
        """Whether ``host`` (as the socket reports it) is in allowed_senders; counted and
        logged (rate-limited) when not."""
        if host in self.allowlist:
            return True
        self.stats.refused_senders += 1
        self.complain(
            "sender",
            "refused syslog from {sender}: not in allowed_senders of {listener}",
            sender=host,
        )
        return False

    def admit(self, host: str, key: str) -> bool:
        """Whether one more connection from ``host`` (counted as ``key``) fits the descriptor
        budget and the connection limits; counted and logged (rate-limited) when not."""
        if self.stats.open_connections >= self.budget:
            self.stats.refused_connections_descriptors += 1
            limit = f"the descriptor budget ({self.budget}: RLIMIT_NOFILE less {FD_RESERVE})"
        else:
            over = self.connections.admit(key)
            if over == "total" and self.pending:
                self._evict_pending()
                over = self.connections.admit(key)
            if over is None:
                return True
            if over == "total":
                self.stats.refused_connections_total += 1
                limit = "max_connections"
            else:
                self.stats.refused_connections_sender += 1
                limit = f"max_connections_per_sender for {key}"
        self.complain(
            "connections",
            "refused a connection from {sender}: {limit} reached",
            sender=host,
            limit=limit,
        )
        return False

    def _evict_pending(self) -> None:
        """Close the oldest connection that has sent no whole frame yet, to make room: a peer
        holding slots without sending (a slow or stalled TLS handshake from a wide
        allowed_senders) cannot keep a real sender out, who frames within milliseconds. Its
        slot is free at once; the descriptor follows when the abort completes."""
        stream, _ = self.pending.popitem(last=False)
        self.stats.evicted_pending += 1
        self.complain(
            "evicted",
            "closed a connection from {sender} that had sent nothing yet, to make room under "
            "max_connections",
            sender=stream.host,
        )
        stream.release()
        stream.close(abort=True)

    def reference(self, now: float) -> datetime:
        """The receipt time as the parser wants it, rebuilt once a second, not per message."""
        second = int(now)
        if second != self._reference[0]:
            self._reference = (second, datetime.fromtimestamp(second, UTC))
        return self._reference[1]

    def deliver(self, data: bytes, host: str, budget: str | None = None) -> None:
        """Parse and hand on one message from ``host``. ``budget``: the key of the sender's
        rate budget (a connection's ``sender_key``, so an IPv6 /64 shares one); None on UDP,
        which has none (see the class docstring)."""
        now = self.clock.seconds()
        if budget is not None and not self.rate.allow(budget, now):
            self.stats.rate_limited += 1
            self.complain(
                "rate",
                "dropped syslog from {sender}: over max_rate_per_sender",
                sender=host,
            )
            return
        if len(data) > self.conf.max_message_size:
            self.stats.oversize += 1
            self.complain(
                "oversize",
                "dropped a {size}-byte message from {sender}: over max_message_size",
                size=len(data),
                sender=host,
            )
            return
        # The sender's count, inlined (a method call would double its cost): see senders.py.
        sender = self._sender(host)
        if sender is None:
            sender = self.senders.admit(host)
        sender.messages += 1
        sender.last_seen = now
        sender.listener = self.name
        if sender.silent_since is not None:
            self.senders.returned(sender, now)
        try:
            if self.gate is None:
                message: SyslogMessage | Dropped = parse(
                    data, self.reference(now), host, self.conf.transport, now
                )
            else:
                message = parse_routed(
                    data, self.gate, self.reference(now), host, self.conf.transport, now
                )
        except ParseError as e:
            self.stats.parse_errors += 1
            sender.parse_errors += 1
            self.complain(
                "parse", "unparsable syslog from {sender}: {error}", sender=host, error=str(e)
            )
            return
        self._received()
        if message is Dropped.UNREAD:
            self.stats.gated_unread += 1
        elif message is Dropped.HOPELESS:
            self.stats.gated_no_literal += 1
        else:
            self.sink(message)

    def _received(self) -> None:
        self.stats.received += 1
        if self.udp:
            self.stats.received_udp += 1
        elif self.tls:
            self.stats.received_tls += 1
        else:
            self.stats.received_tcp += 1

    def complain(self, kind: str, fmt: str, **fields: object) -> None:
        """Log ``fmt`` unless the same kind was logged less than a minute ago."""
        now = self.clock.seconds()
        if now - self._last_complaint.get(kind, -_LOG_EVERY) < _LOG_EVERY:
            self._suppressed[kind] = self._suppressed.get(kind, 0) + 1
            return
        self._last_complaint[kind] = now
        suppressed = self._suppressed.pop(kind, 0)
        tail = f" ({suppressed} more like it since the last report)" if suppressed else ""
        log.warn(fmt + tail, listener=self.name, **fields)


def descriptor_limit() -> int:
    """The process's soft RLIMIT_NOFILE (systemd's LimitNOFILE)."""
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return 1 << 30 if soft == resource.RLIM_INFINITY else soft


def connection_budget(descriptors: int) -> int:
    """How many syslog connections the process may hold open, over every listener: its
    descriptor limit (``descriptors``) less FD_RESERVE. Beyond it connections are refused on
    accept, so that accept(2) never meets EMFILE and the control socket keeps its descriptors."""
    return max(descriptors - FD_RESERVE, 0)


@functools.lru_cache(maxsize=_CANONICAL_CACHE)
def canonical_host(host: str) -> str:
    """The peer address as messages carry it: without a zone index, in the canonical form of
    ``rules.addresses`` (an IPv4 peer of a dual-stack socket, ``::ffff:192.0.2.1``, as plain
    IPv4), so jail ``senders`` and the logs see the address the admin wrote. Asked only for
    allowed peers (``Allowlist`` refuses the others first), so the cache holds senders only."""
    try:
        return str(parse_address(host.split("%", 1)[0]))
    except ValueError:
        return host
