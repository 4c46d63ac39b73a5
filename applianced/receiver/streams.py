"""Syslog over TCP and TLS: one connection's frames (RFC 6587; RFC 5425 over TLS) through the
listener's Edge, under its deadlines (handshake, first frame, idle); the factories that admit
or refuse a connection on accept, before any byte or any TLS work.
``listeners.ListenerService`` listens with them.
"""

from __future__ import annotations

from OpenSSL import SSL
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IAddress, IDelayedCall, IHandshakeListener, IReactorTime
from twisted.internet.protocol import Factory, Protocol
from twisted.protocols.tls import TLSMemoryBIOFactory, TLSMemoryBIOProtocol
from twisted.python.failure import Failure
from zope.interface import implementer

from applianced.conf.schema import ListenerConf
from applianced.receiver.edge import Edge, ReceiverStats, Sink, canonical_host, log
from applianced.receiver.framing import FrameError, Framer
from applianced.receiver.limits import sender_key
from applianced.receiver.senders import SenderBook
from applianced.receiver.tls import refusal
from applianced.rules.engine import Gate


class SyslogStream(Protocol):
    """One TCP connection: frames to the edge, under its deadlines (``_due``)."""

    def __init__(self, edge: Edge, host: str, key: str) -> None:
        self.edge = edge
        self.host = host
        self.key = key  # what the connection counts against in the per-sender limit
        self.framer = Framer(edge.conf.max_message_size)
        self.opened_at = 0.0  # seconds (reactor clock): when the connection was accepted
        self.last_data = 0.0  # ... when the last bytes arrived
        self.handshaking = False  # a TLS handshake not yet done (TLSStream)
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
        senders: SenderBook | None = None,
    ) -> None:
        self.edge = Edge(conf, sink, stats, clock, gate, senders)

    def buildProtocol(self, addr: IAddress | None) -> Protocol | None:
        peer = getattr(addr, "host", "")
        if not self.edge.allowed(peer):
            return None
        host = canonical_host(peer)
        key = sender_key(host, self.edge.conf.connection_prefix_v6)
        if not self.edge.admit(host, key):
            return None
        stream = TLSStream if self.edge.tls else SyslogStream
        return stream(self.edge, host, key)


class TLSFactory(TLSMemoryBIOFactory):
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
class TLSStream(SyslogStream):
    """Syslog over TLS (RFC 5425, octet-counted): no byte is read before the peer passed the
    listener's checks. OpenSSL checks the chain to client_ca in the handshake; the
    fingerprint and name checks follow here, once it is done."""

    def __init__(self, edge: Edge, host: str, key: str) -> None:
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
