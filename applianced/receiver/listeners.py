"""Twisted UDP, TCP and TLS listeners: bytes off the wire -> SyslogMessage -> one sink.

Thin by design: check the sender against the listener's ``allowed_senders`` (``allowlist.py``:
the same cost for every source, nothing kept per refused source) and limits (connections,
per-sender rate on TCP/TLS: ``limits.py``; the descriptor budget; handshake, first-frame and
idle deadlines; TLS peer checks: ``tls.py``), frame
(TCP/TLS, RFC 6587), drop what no jail can match when given the routing gate (``gate``), parse
(sans-io ``parse``, stamped with sender, transport and time of receipt), hand to the sink.
Socket options: a large UDP receive buffer (``rcvbuf``) and SO_REUSEPORT (``reuse_port``); what
the kernel still drops on a full UDP buffer is counted (``kerneldrops.py``).
``Listeners`` opens, rebinds and reconfigures them on reload.
Nothing raises out of ``datagramReceived``/``dataReceived``: bad input is counted, logged at a
limited rate and dropped. Senders outside the allowlist are dropped and counted, never parsed;
their connections are closed on accept, before any TLS.
"""

from __future__ import annotations

import functools
import resource
import socket
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from ipaddress import ip_address
from typing import Any

from OpenSSL import SSL
from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.error import CannotListenError, ConnectionDone
from twisted.internet.interfaces import (
    IAddress,
    IDelayedCall,
    IHandshakeListener,
    IListeningPort,
    IProtocolFactory,
    IReactorTime,
)
from twisted.internet.protocol import DatagramProtocol, Factory, Protocol
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOFactory, TLSMemoryBIOProtocol
from twisted.python.failure import Failure
from zope.interface import implementer

from applianced.conf.schema import ListenerConf
from applianced.errors import ParseError
from applianced.receiver.allowlist import Allowlist
from applianced.receiver.framing import FrameError, Framer
from applianced.receiver.kerneldrops import DROPS_EVERY, socket_drops
from applianced.receiver.limits import ConnectionLimiter, RateLimiter, sender_key
from applianced.receiver.parse import Dropped, parse, parse_routed
from applianced.receiver.tls import ServerTLS, TLSFileError, refusal, server_context
from applianced.rules.addresses import parse_address
from applianced.rules.engine import Gate
from applianced.rules.message import SyslogMessage

__all__ = [
    "FD_RESERVE",
    "ListenerService",
    "Listeners",
    "ReceiverStats",
    "SyslogTCPFactory",
    "SyslogUDP",
    "canonical_host",
    "connection_budget",
    "open_udp_warning",
]

Sink = Callable[[SyslogMessage], None]
log = Logger()

_CANONICAL_CACHE = 4096  # canonical_host's answers; only allowed peers reach it
# Read whole datagrams (the UDP maximum), so that an oversize one is seen and counted as such
# rather than silently truncated to Twisted's default of 8192 bytes.
_UDP_READ_SIZE = 65535
_LOG_EVERY = 60.0  # seconds between two log lines about the same kind of bad input
_SO_RCVBUFFORCE = 33  # Linux (asm-generic/socket.h); Python's socket module does not name it
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


class _Edge:
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
    would have found nothing in it. Other shapes are always parsed."""

    def __init__(
        self,
        conf: ListenerConf,
        sink: Sink,
        stats: ReceiverStats,
        clock: IReactorTime,
        gate: Gate | None = None,
    ) -> None:
        self.conf = conf
        self.sink = sink
        self.gate = gate
        self.stats = stats
        self.clock = clock
        self._reference = (-1, datetime.fromtimestamp(0, UTC))  # (second, that second)
        self.udp = conf.transport == "udp"
        self.tls = conf.transport == "tls"
        self.allowlist = Allowlist(conf.allowed_senders)
        self._last_complaint: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}
        self.streams: set[_SyslogStream] = set()  # open TCP connections, for a reload
        # Those that have not sent a whole frame yet, oldest first: max_connections evicts
        # them before it refuses anyone.
        self.pending: OrderedDict[_SyslogStream, None] = OrderedDict()
        self.rate = RateLimiter(conf.max_rate_per_sender, conf.max_burst_per_sender)
        self.connections = ConnectionLimiter(conf.max_connections, conf.max_connections_per_sender)
        self.budget = connection_budget()  # open connections of every listener together

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
        listener = f"{self.conf.transport}/{self.conf.address}:{self.conf.port}"
        log.warn(fmt + tail, listener=listener, **fields)


class SyslogUDP(DatagramProtocol):
    """One datagram is one message (RFC 5426)."""

    noisy = False  # the service logs what it listens on, once, in its own words

    def __init__(
        self,
        conf: ListenerConf,
        sink: Sink,
        stats: ReceiverStats,
        clock: IReactorTime,
        gate: Gate | None = None,
    ) -> None:
        self.edge = _Edge(conf, sink, stats, clock, gate)

    def datagramReceived(self, datagram: bytes, addr: tuple[str, int]) -> None:
        if not self.edge.allowed(addr[0]):
            return
        host = canonical_host(addr[0])
        try:
            self.edge.deliver(datagram, host)
        except Exception:
            log.failure("dropped a datagram after an internal error", sender=host)


class _SyslogStream(Protocol):
    """One TCP connection: frames to the edge, under its deadlines (``_due``)."""

    def __init__(self, edge: _Edge, host: str, key: str) -> None:
        self.edge = edge
        self.host = host
        self.key = key  # what the connection counts against in the per-sender limit
        self.framer = Framer(edge.conf.max_message_size)
        self.opened_at = 0.0  # seconds (reactor clock): when the connection was accepted
        self.last_data = 0.0  # ... when the last bytes arrived
        self.handshaking = False  # a TLS handshake not yet done (_TLSStream)
        self.framed = False  # a whole frame has arrived
        self.closing = False  # we close it: a frame cut short is not the peer's last line
        self._timer: IDelayedCall | None = None

    def connectionMade(self) -> None:
        edge = self.edge
        edge.stats.connections += 1
        edge.stats.open_connections += 1
        edge.connections.opened(self.key)
        edge.streams.add(self)
        edge.pending[self] = None
        self.opened_at = self.last_data = edge.clock.seconds()
        self._check_deadline()

    def connectionLost(self, reason: object = None) -> None:
        self.release()
        self._cancel_timer()
        clean = isinstance(reason, Failure) and reason.check(ConnectionDone) is not None
        self._end(clean and not self.closing)

    def release(self) -> None:
        """Give the connection's slot back (once): at its loss, or when evicted."""
        edge = self.edge
        edge.pending.pop(self, None)
        if self in edge.streams:
            edge.streams.discard(self)
            edge.stats.open_connections -= 1
            edge.connections.closed(self.key)

    def close(self, *, abort: bool = False) -> None:
        """Close from our side: what is left of a frame then is a frame error, not a line."""
        self.closing = True
        if abort:
            self.transport.abortConnection()  # type: ignore[union-attr]
        else:
            self.transport.loseConnection()  # type: ignore[union-attr]

    def rearm(self) -> None:
        """Look at the deadlines again (a reload changed them)."""
        self._cancel_timer()
        self._check_deadline()

    def _cancel_timer(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _end(self, clean: bool) -> None:
        """The frame left when the connection closed: a line the peer ended the connection
        without its LF is read when the close was clean (the peer's FIN); a frame cut short (a
        reset, any close of ours, a count not reached) is a frame error."""
        last = self.framer.end()
        if isinstance(last, bytes) and not clean:
            last = FrameError("connection lost inside a frame", False)
        if last is not None:
            self._process([last])

    def _due(self) -> tuple[float, str] | None:
        """The earliest deadline (reactor seconds) of the connection and what it waits for.
        Each only moves later as the connection goes on, so one timer at the earliest, checked
        again when it fires, serves all three; the read path only stores the time."""
        conf = self.edge.conf
        due = []
        if self.handshaking and conf.handshake_timeout:
            due.append((self.opened_at + conf.handshake_timeout, "handshake_timeout"))
        if not self.framed and conf.first_frame_timeout:
            due.append((self.opened_at + conf.first_frame_timeout, "first_frame_timeout"))
        if conf.idle_timeout:
            due.append((self.last_data + conf.idle_timeout, "idle_timeout"))
        return min(due, default=None)

    def _check_deadline(self) -> None:
        """Close the connection when a deadline passed (a peer that never handshakes, never
        sends a whole frame, or went silent: a dead peer, a slow-loris); else look again at
        the next one."""
        self._timer = None
        due = self._due()
        if due is None:
            return
        left = due[0] - self.edge.clock.seconds()
        if left > 0:
            self._timer = self.edge.clock.callLater(left, self._check_deadline)
            return
        stats = self.edge.stats
        if due[1] == "handshake_timeout":
            stats.handshake_timeouts += 1
        elif due[1] == "first_frame_timeout":
            stats.first_frame_timeouts += 1
        else:
            stats.idle_timeouts += 1
        self.edge.complain(
            due[1],
            "closing a syslog connection from {sender}: {limit} passed",
            sender=self.host,
            limit=due[1],
        )
        self.close(abort=True)

    def dataReceived(self, data: bytes) -> None:
        self.last_data = self.edge.clock.seconds()
        self._process(self.framer.feed(data))

    def _process(self, frames: list[bytes | FrameError]) -> None:
        if frames and not self.framed:
            self.framed = True
            self.edge.pending.pop(self, None)
        try:
            for frame in frames:
                if isinstance(frame, FrameError):
                    self._frame_error(frame)
                    if frame.fatal:
                        return
                else:
                    self.edge.deliver(frame, self.host, self.key)
        except Exception:
            log.failure("closing a syslog connection after an internal error", sender=self.host)
            self.close()

    def _frame_error(self, error: FrameError) -> None:
        self.edge.stats.frame_errors += 1
        if error.oversize:
            self.edge.stats.oversize += 1
        self.edge.complain(
            "frame",
            "bad syslog frame from {sender}: {reason}{action}",
            sender=self.host,
            reason=error.reason,
            action="; closing the connection" if error.fatal else "",
        )
        if error.fatal:
            self.close()


class SyslogTCPFactory(Factory):
    """Syslog over TCP, octet-counted or LF-framed (RFC 6587), detected per connection.
    Connections from senders outside the allowlist are refused before any byte is read."""

    noisy = False

    def __init__(
        self,
        conf: ListenerConf,
        sink: Sink,
        stats: ReceiverStats,
        clock: IReactorTime,
        gate: Gate | None = None,
    ) -> None:
        self.edge = _Edge(conf, sink, stats, clock, gate)

    def buildProtocol(self, addr: IAddress | None) -> Protocol | None:
        peer = getattr(addr, "host", "")
        if not self.edge.allowed(peer):
            return None
        host = canonical_host(peer)
        key = sender_key(host, self.edge.conf.connection_prefix_v6)
        if not self.edge.admit(host, key):
            return None
        stream = _TLSStream if self.edge.tls else _SyslogStream
        return stream(self.edge, host, key)


class _TLSFactory(TLSMemoryBIOFactory):
    """TLS around the connections a SyslogTCPFactory accepts, and none around those it
    refuses: the listening port then closes the socket at once, before any TLS work.
    (TLSMemoryBIOFactory would wrap the missing protocol, complete the handshake, keep the
    socket open and log tracebacks.)"""

    noisy = False

    # IProtocolFactory allows None (tcp.Port closes the socket); WrappingFactory's type does not.
    def buildProtocol(self, addr: IAddress | None) -> TLSMemoryBIOProtocol | None:  # type: ignore[override]
        inner = self.wrappedFactory.buildProtocol(addr)
        return None if inner is None else self.protocol(self, inner)


@implementer(IHandshakeListener)
class _TLSStream(_SyslogStream):
    """Syslog over TLS (RFC 5425, octet-counted): no byte is read before the peer passed the
    listener's checks. OpenSSL checks the chain to client_ca in the handshake; the
    fingerprint and name checks follow here, once it is done."""

    def __init__(self, edge: _Edge, host: str, key: str) -> None:
        super().__init__(edge, host, key)
        self.handshaking = True
        self.verified = False
        self.refused = False

    def handshakeCompleted(self) -> None:
        self.handshaking = False
        tls = self.edge.conf.tls
        peer = self.transport.getPeerCertificate()  # type: ignore[union-attr]
        why = refusal(peer, tls) if tls is not None else None
        if why is None:
            self.verified = True
            return
        self._refuse(why)
        self.close(abort=True)

    def dataReceived(self, data: bytes) -> None:
        if self.verified:
            super().dataReceived(data)

    def connectionLost(self, reason: object = None) -> None:
        pending = not (self.verified or self.refused)
        if pending and isinstance(reason, Failure) and reason.check(SSL.Error):
            self._refuse(f"TLS handshake failed: {reason.getErrorMessage()}")
        super().connectionLost(reason)

    def _refuse(self, why: str) -> None:
        self.refused = True
        self.edge.stats.tls_refused += 1
        self.edge.complain(
            "tls", "refused a TLS peer {sender}: {reason}", sender=self.host, reason=why
        )


class ListenerService(Service):
    """Opens one configured listener when started and closes it when stopped."""

    def __init__(
        self,
        conf: ListenerConf,
        sink: Sink,
        stats: ReceiverStats,
        reactor: Any,
        gate: Gate | None = None,
    ) -> None:
        self.conf = conf
        self.sink = sink
        self.gate = gate
        self.stats = stats
        self.reactor = reactor
        self.port: IListeningPort | None = None
        self._edge: _Edge | None = None
        self._tls: ServerTLS | None = None  # the TLS listener's context holder (reload)
        self._udp_socket: socket.socket | None = None  # the UDP listener's: rcvbuf, drops
        self._drops: LoopingCall | None = None  # looks at the UDP socket's kernel drops
        self._drops_seen = 0  # the socket's drops already added to the stats

    @property
    def key(self) -> _SocketKey:
        """What a socket is bound to: a reload rebinds a listener only when this changes."""
        return _socket_key(self.conf)

    def __str__(self) -> str:
        return f"{self.conf.transport}/{self.conf.address}:{self.conf.port}"

    def startService(self) -> None:
        """Bind (unless bound already); raises CannotListenError. Runs after the appliance
        restored its bans."""
        c = self.conf
        if self.port is None:
            if c.transport == "udp":
                proto = SyslogUDP(c, self.sink, self.stats, self.reactor, self.gate)
                if c.reuse_port:
                    with _bind_reusing_port(c, socket.SOCK_DGRAM) as sock:
                        port = self.reactor.adoptDatagramPort(
                            sock.fileno(), sock.family, proto, _UDP_READ_SIZE
                        )
                else:
                    port = self.reactor.listenUDP(c.port, proto, interface=c.address)
                    port.maxPacketSize = _UDP_READ_SIZE
                self._udp_socket = port.getHandle()
                _set_rcvbuf(self._udp_socket, c.rcvbuf, str(self))
                self._drops_seen = 0
                self._drops = LoopingCall(self._count_drops)
                self._drops.clock = self.reactor
                self._drops.start(DROPS_EVERY, now=False)
                self._edge = proto.edge
                warning = open_udp_warning(c)
                if warning:
                    log.warn("{warning}", warning=warning)
            elif c.tls is not None:
                factory = SyslogTCPFactory(c, self.sink, self.stats, self.reactor, self.gate)
                try:
                    self._tls = ServerTLS(server_context(c.tls))
                except TLSFileError as e:
                    raise CannotListenError(c.address, c.port, e) from None
                port = self._listen_tcp(_TLSFactory(self._tls, False, factory))
                self._edge = factory.edge
            else:
                factory = SyslogTCPFactory(c, self.sink, self.stats, self.reactor, self.gate)
                port = self._listen_tcp(factory)
                self._edge = factory.edge
            if c.transport != "udp" and self._edge.budget < c.max_connections:
                log.warn(
                    "{listener}: max_connections {max} is above the descriptor budget of "
                    "{budget} connections (RLIMIT_NOFILE {limit} less {reserve} kept for the "
                    "control socket, the store and the kernel); connections beyond it are "
                    "refused: raise LimitNOFILE in the systemd unit (ulimit -n by hand)",
                    listener=str(self),
                    max=c.max_connections,
                    budget=self._edge.budget,
                    limit=_descriptor_limit(),
                    reserve=FD_RESERVE,
                )
            self.port = port
        super().startService()

    def _listen_tcp(self, factory: IProtocolFactory) -> IListeningPort:
        c = self.conf
        if not c.reuse_port:
            return self.reactor.listenTCP(c.port, factory, interface=c.address)  # type: ignore[no-any-return]
        with _bind_reusing_port(c, socket.SOCK_STREAM) as sock:
            return self.reactor.adoptStreamPort(sock.fileno(), sock.family, factory)  # type: ignore[no-any-return]

    def reconfigure(self, conf: ListenerConf) -> None:
        """Settings that need no new socket (allowed_senders, max_message_size, limits,
        rcvbuf), applied to the bound one. ``conf`` must have the same socket key."""
        if _socket_key(conf) != self.key:
            raise ValueError(f"{self} cannot become {conf.transport}/{conf.address}:{conf.port}")
        if self._udp_socket is not None and conf.rcvbuf != self.conf.rcvbuf:
            _set_rcvbuf(self._udp_socket, conf.rcvbuf, str(self))
        if self._tls is not None and conf.tls is not None and conf.tls != self.conf.tls:
            # New certificates (or a renewed file): new connections get a new context, the
            # open ones keep theirs. Unusable files keep the old context.
            try:
                self._tls.context = server_context(conf.tls)
            except TLSFileError as e:
                log.error(
                    "{listener}: kept the old TLS certificates: {error}",
                    listener=str(self),
                    error=str(e),
                )
        self.conf = conf
        if self._edge is not None:
            self._edge.reconfigure(conf)

    def _count_drops(self) -> None:
        """Add the kernel's drops on the UDP socket since the last look to the stats."""
        drops = socket_drops(self._udp_socket) if self._udp_socket is not None else None
        if drops is not None and drops > self._drops_seen:
            self.stats.udp_kernel_drops += drops - self._drops_seen
            self._drops_seen = drops

    def stopService(self) -> Deferred[None] | None:
        """Stop listening and close this listener's connections: a removed or rebound
        listener's peers reconnect to what the config now says, under its limits."""
        super().stopService()
        if self._edge is not None:
            for stream in list(self._edge.streams):
                stream.close()
        if self._drops is not None:
            self._drops.stop()
            self._drops = None
            self._count_drops()  # the last ones, before the socket goes
        port, self.port, self._udp_socket = self.port, None, None
        return port.stopListening() if port is not None else None


class Listeners(MultiService):
    """Every configured listener, as children. ``update`` moves them to a reloaded config:
    a listener whose transport, address and port are unchanged keeps its socket (and its TCP
    connections) and takes the new allowed_senders/max_message_size; the others are rebound."""

    def __init__(
        self, confs: Sequence[ListenerConf], make: Callable[[ListenerConf], ListenerService]
    ) -> None:
        super().__init__()
        self.make = make
        for conf in confs:
            make(conf).setServiceParent(self)

    def update(self, confs: Sequence[ListenerConf]) -> Deferred[dict[str, list[str]]]:
        """Open the new sockets first, then close the old ones. A bind that fails raises
        CannotListenError and changes nothing: what was opened is closed again and every old
        listener stays (one that had to be closed to free its port is bound again).
        Returns the listeners opened, closed and updated in place, as ``udp/ADDR:PORT``."""
        return Deferred.fromCoroutine(self._update(tuple(confs)))

    async def _update(self, confs: tuple[ListenerConf, ...]) -> dict[str, list[str]]:
        current: dict[_SocketKey, ListenerService] = {s.key: s for s in self}
        wanted: dict[_SocketKey, ListenerConf] = {_socket_key(c): c for c in confs}
        removed = [s for k, s in current.items() if k not in wanted]
        opened: list[ListenerService] = []
        freed: list[ListenerService] = []  # old listeners closed early to free a port
        try:
            for key, conf in wanted.items():
                if key in current:
                    continue
                new = self.make(conf)
                try:
                    new.startService()
                except CannotListenError:
                    # Another address on the same port (127.0.0.1:514 -> 0.0.0.0:514): the old
                    # socket holds it. Close that one, then bind; put it back on failure.
                    clash = [s for s in removed if _clash(s.conf, conf) and s not in freed]
                    if not clash:
                        raise
                    for old in clash:
                        await maybeDeferred(old.stopService)
                        freed.append(old)
                    new.startService()
                opened.append(new)
        except CannotListenError:
            for new in opened:
                await maybeDeferred(new.stopService)
            for old in freed:
                old.startService()
            raise
        for new in opened:
            new.setServiceParent(self)  # already bound: addService's start is a no-op
        for old in removed:
            if old in freed:
                old.disownServiceParent()
            else:
                await maybeDeferred(old.disownServiceParent)
        updated = []
        for bound, service in current.items():
            target = wanted.get(bound)
            if target is not None and target != service.conf:
                service.reconfigure(target)
                updated.append(str(service))
        return {
            "opened": [str(s) for s in opened],
            "closed": [str(s) for s in removed],
            "updated": updated,
        }


def open_udp_warning(conf: ListenerConf) -> str | None:
    """The startup warning for a UDP listener on a non-loopback address that allows any
    sender: UDP source addresses can be forged, and allowed_senders is UDP's only protection,
    so anyone who can reach the port could get any address banned. None when not so."""
    if conf.transport != "udp":
        return None
    try:
        if ip_address(conf.address.split("%", 1)[0]).is_loopback:
            return None
    except ValueError:
        pass
    if not any(net.prefixlen == 0 for net in conf.allowed_senders):
        return None
    return (
        f"udp/{conf.address}:{conf.port} accepts syslog from any sender (allowed_senders "
        "holds 0.0.0.0/0 or ::/0): UDP source addresses can be forged, so anyone who reaches "
        "this port can get any address banned; list exactly your mail servers in allowed_senders"
    )


_SocketKey = tuple[str, str, int, bool]


def _socket_key(conf: ListenerConf) -> _SocketKey:
    """What a listener's socket is bound with; a change of any of it needs a new socket."""
    return (conf.transport, conf.address, conf.port, conf.reuse_port)


@contextmanager
def _bind_reusing_port(conf: ListenerConf, kind: int) -> Iterator[socket.socket]:
    """A socket bound to the listener's address with SO_REUSEPORT (listening, for TCP), for
    the reactor to adopt: the kernel spreads datagrams and connections over every socket bound
    so, one per daemon process. Closed on leaving (the reactor keeps a duplicate)."""
    family = socket.AF_INET6 if ":" in conf.address else socket.AF_INET
    sock = socket.socket(family, kind)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if kind == socket.SOCK_STREAM:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((conf.address, conf.port))
        if kind == socket.SOCK_STREAM:
            sock.listen(socket.SOMAXCONN)
        sock.setblocking(False)
    except OSError as e:
        sock.close()
        raise CannotListenError(conf.address, conf.port, e) from None
    with sock:
        yield sock


def _set_rcvbuf(sock: socket.socket, size: int, listener: str) -> None:
    """Ask for a receive buffer of ``size`` bytes: past net.core.rmem_max when running as root
    (SO_RCVBUFFORCE), else up to it; log when the kernel granted less."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, _SO_RCVBUFFORCE, size)
    except OSError:  # not root (no CAP_NET_ADMIN)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
    granted = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) // 2  # Linux reports 2x
    if granted < size:
        log.warn(
            "{listener}: receive buffer is {granted} bytes, not the {size} of rcvbuf; raise "
            "the sysctl net.core.rmem_max (or run as root) to get it",
            listener=listener,
            granted=granted,
            size=size,
        )


def _descriptor_limit() -> int:
    """The process's soft RLIMIT_NOFILE (systemd's LimitNOFILE)."""
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return 1 << 30 if soft == resource.RLIM_INFINITY else soft


def connection_budget() -> int:
    """How many syslog connections the process may hold open, over every listener: its
    descriptor limit less FD_RESERVE. Beyond it connections are refused on accept, so that
    accept(2) never meets EMFILE and the control socket keeps its descriptors."""
    return max(_descriptor_limit() - FD_RESERVE, 0)


def _clash(old: ListenerConf, new: ListenerConf) -> bool:
    # TCP and TLS listeners share the TCP port space: tcp -> tls on one port is a rebind.
    return (old.transport == "udp") == (new.transport == "udp") and old.port == new.port


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
