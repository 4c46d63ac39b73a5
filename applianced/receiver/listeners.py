"""Twisted UDP and TCP listeners: bytes off the wire -> SyslogMessage -> one sink.

Thin by design: check the sender against the listener's ``allowed_senders``, frame (TCP, RFC
6587), parse (sans-io ``parse``), stamp sender/transport/time of receipt, hand to the sink.
Nothing raises out of ``datagramReceived``/``dataReceived``: bad input is counted, logged at a
limited rate and dropped. Senders outside the allowlist are dropped and counted, never parsed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from ipaddress import ip_address
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IAddress, IListeningPort, IReactorTime
from twisted.internet.protocol import DatagramProtocol, Factory, Protocol
from twisted.logger import Logger

from applianced.conf.schema import ListenerConf
from applianced.errors import ParseError
from applianced.receiver.framing import FrameError, Framer
from applianced.receiver.message import SyslogMessage
from applianced.receiver.parse import parse
from applianced.rules.decision import IPNetwork

__all__ = ["ListenerService", "ReceiverStats", "SyslogTCPFactory", "SyslogUDP"]

Sink = Callable[[SyslogMessage], None]
log = Logger()

_SENDER_CACHE_MAX = 4096
# Read whole datagrams (the UDP maximum), so that an oversize one is seen and counted as such
# rather than silently truncated to Twisted's default of 8192 bytes.
_UDP_READ_SIZE = 65535
_LOG_EVERY = 60.0  # seconds between two log lines about the same kind of bad input


@dataclass(slots=True)
class ReceiverStats:
    """Counters shared by every listener (since start)."""

    received: int = 0
    parse_errors: int = 0
    frame_errors: int = 0
    oversize: int = 0
    refused_senders: int = 0
    connections: int = 0


class _Edge:
    """What UDP and TCP share: the allowlist check, parse+stamp, rate-limited complaints."""

    def __init__(
        self, conf: ListenerConf, sink: Sink, stats: ReceiverStats, clock: IReactorTime
    ) -> None:
        self.conf = conf
        self.sink = sink
        self.stats = stats
        self.clock = clock
        self._allowed: dict[str, bool] = {}
        self._last_complaint: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def allowed(self, host: str) -> bool:
        known = self._allowed.get(host)
        if known is None:
            known = _in_networks(host, self.conf.allowed_senders)
            if len(self._allowed) >= _SENDER_CACHE_MAX:
                self._allowed.clear()
            self._allowed[host] = known
        if not known:
            self.stats.refused_senders += 1
            self.complain(
                "sender",
                "refused syslog from {sender}: not in allowed_senders of {listener}",
                sender=host,
            )
        return known

    def deliver(self, data: bytes, host: str) -> None:
        now = self.clock.seconds()
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
            message = parse(data, datetime.fromtimestamp(now, UTC))
        except ParseError as e:
            self.stats.parse_errors += 1
            self.complain(
                "parse", "unparsable syslog from {sender}: {error}", sender=host, error=str(e)
            )
            return
        self.stats.received += 1
        self.sink(message.received(host, self.conf.transport, now))

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

    def __init__(
        self, conf: ListenerConf, sink: Sink, stats: ReceiverStats, clock: IReactorTime
    ) -> None:
        self.edge = _Edge(conf, sink, stats, clock)

    def datagramReceived(self, datagram: bytes, addr: tuple[str, int]) -> None:
        host = addr[0]
        if not self.edge.allowed(host):
            return
        try:
            self.edge.deliver(datagram, host)
        except Exception:
            log.failure("dropped a datagram after an internal error", sender=host)


class _SyslogStream(Protocol):
    def __init__(self, edge: _Edge, host: str) -> None:
        self.edge = edge
        self.host = host
        self.framer = Framer(edge.conf.max_message_size)

    def connectionMade(self) -> None:
        self.edge.stats.connections += 1

    def dataReceived(self, data: bytes) -> None:
        try:
            for frame in self.framer.feed(data):
                if isinstance(frame, FrameError):
                    self._frame_error(frame)
                    if frame.fatal:
                        return
                else:
                    self.edge.deliver(frame, self.host)
        except Exception:
            log.failure("closing a syslog connection after an internal error", sender=self.host)
            self.transport.loseConnection()  # type: ignore[union-attr]

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
            self.transport.loseConnection()  # type: ignore[union-attr]


class SyslogTCPFactory(Factory):
    """Syslog over TCP, octet-counted or LF-framed (RFC 6587), detected per connection.
    Connections from senders outside the allowlist are refused before any byte is read."""

    def __init__(
        self, conf: ListenerConf, sink: Sink, stats: ReceiverStats, clock: IReactorTime
    ) -> None:
        self.edge = _Edge(conf, sink, stats, clock)

    def buildProtocol(self, addr: IAddress | None) -> Protocol | None:
        host = getattr(addr, "host", "")
        if not self.edge.allowed(host):
            return None
        return _SyslogStream(self.edge, host)


class ListenerService(Service):
    """Opens one configured listener when started and closes it when stopped."""

    def __init__(self, conf: ListenerConf, sink: Sink, stats: ReceiverStats, reactor: Any) -> None:
        self.conf = conf
        self.sink = sink
        self.stats = stats
        self.reactor = reactor
        self.port: IListeningPort | None = None

    def startService(self) -> None:
        """Bind; raises CannotListenError. Runs after the appliance restored its bans."""
        c = self.conf
        if c.transport == "udp":
            port = self.reactor.listenUDP(
                c.port, SyslogUDP(c, self.sink, self.stats, self.reactor), interface=c.address
            )
            port.maxPacketSize = _UDP_READ_SIZE
        else:
            factory = SyslogTCPFactory(c, self.sink, self.stats, self.reactor)
            port = self.reactor.listenTCP(c.port, factory, interface=c.address)
        self.port = port
        super().startService()

    def stopService(self) -> Deferred[None] | None:
        super().stopService()
        port, self.port = self.port, None
        return port.stopListening() if port is not None else None


def _in_networks(host: str, networks: tuple[IPNetwork, ...]) -> bool:
    try:
        address = ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    if address.version == 6 and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in net for net in networks)
