"""Syslog over UDP: one datagram is one message (RFC 5426), through the listener's Edge.
``listeners.ListenerService`` binds the socket and hands it this protocol.
"""

from __future__ import annotations

from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import DatagramProtocol

from applianced.conf.schema import ListenerConf
from applianced.receiver.edge import Edge, ReceiverStats, Sink, canonical_host, log
from applianced.receiver.senders import SenderBook
from applianced.rules.engine import Gate

# Read whole datagrams (the UDP maximum), so that an oversize one is seen and counted as such
# rather than silently truncated to Twisted's default of 8192 bytes.
UDP_READ_SIZE = 65535


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
        senders: SenderBook | None = None,
    ) -> None:
        self.edge = Edge(conf, sink, stats, clock, gate, senders)

    def datagramReceived(self, datagram: bytes, addr: tuple[str, int]) -> None:
        if not self.edge.allowed(addr[0]):
            return
        host = canonical_host(addr[0])
        try:
            self.edge.deliver(datagram, host)
        except Exception:
            log.failure("dropped a datagram after an internal error", sender=host)
