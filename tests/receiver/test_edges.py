"""The stream listeners' edges (issue 15), on a task.Clock: a refused peer gets no TLS layer,
handshake and first-frame deadlines, per-sender connection counts per IPv6 prefix, the
descriptor budget, and the last LF frame of a closing connection."""

from __future__ import annotations

from dataclasses import replace
from ipaddress import ip_network
from pathlib import Path

import pytest
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.error import ConnectionAborted, ConnectionDone, ConnectionLost
from twisted.internet.protocol import Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure

from applianced import views
from applianced.conf.schema import ListenerConf, TLSConf
from applianced.receiver import edge as edge_module
from applianced.receiver.edge import ReceiverStats
from applianced.receiver.listeners import ListenerService
from applianced.receiver.streams import SyslogTCPFactory, TLSStream
from applianced.rules.message import SyslogMessage
from applianced.tlsinit import init_tls
from tests.receiver.test_limits import LINE

SENDERS = (ip_network("127.0.0.1/32"), ip_network("2001:db8::/32"))


def conf(**kw: object) -> ListenerConf:
    base = ListenerConf("tcp", "127.0.0.1", 0, SENDERS, 8192)
    return replace(base, **kw)  # type: ignore[arg-type]


def tcp(**kw: object) -> tuple[SyslogTCPFactory, list[SyslogMessage], ReceiverStats, Clock]:
    sink: list[SyslogMessage] = []
    stats, clock = ReceiverStats(), Clock()
    return SyslogTCPFactory(conf(**kw), sink.append, stats, clock), sink, stats, clock


class TLSTransport(StringTransport):
    """What the TLS layer offers the stream: the peer's certificate (none here)."""

    def getPeerCertificate(self) -> None:
        return None


def connect(factory: SyslogTCPFactory, host: str = "127.0.0.1") -> Protocol | None:
    addr = IPv6Address("TCP", host, 1) if ":" in host else IPv4Address("TCP", host, 1)
    proto = factory.buildProtocol(addr)
    if proto is not None:
        proto.makeConnection(TLSTransport())
    return proto


def transport(proto: Protocol) -> StringTransport:
    t = proto.transport
    assert isinstance(t, StringTransport)
    return t


# -- item 1: a refused peer is closed before any TLS work -------------------------------------


class _Port:
    def stopListening(self) -> None:
        pass


class _Reactor(Clock):
    def __init__(self) -> None:
        super().__init__()
        self.factory: object = None

    def listenTCP(self, port: int, factory: object, interface: str) -> _Port:
        self.factory = factory
        return _Port()


def test_tls_listener_builds_nothing_for_a_refused_peer(tmp_path: Path) -> None:
    """A TLS listener's factory returns None for a sender outside allowed_senders (the port
    then closes the socket on accept): no TLS layer around a missing protocol, no handshake,
    no traceback; the refusal is counted. An allowed peer gets the TLS layer."""
    init_tls(tmp_path, ["localhost"], [])
    tls = TLSConf(cert=tmp_path / "server.pem", key=tmp_path / "server.key")
    reactor, stats = _Reactor(), ReceiverStats()
    service = ListenerService(
        conf(transport="tls", port=6514, tls=tls), lambda m: None, stats, reactor
    )
    service.startService()
    factory = reactor.factory
    assert isinstance(factory, TLSMemoryBIOFactory)
    assert factory.buildProtocol(IPv4Address("TCP", "127.0.0.2", 1)) is None
    assert stats.refused_senders == 1
    assert factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 1)) is not None


# -- item 2: deadlines ------------------------------------------------------------------------


def test_tls_handshake_deadline_closes_and_counts() -> None:
    """A TLS peer that has not completed its handshake handshake_timeout seconds after the
    accept is aborted and counted; one that completed it in time is not."""
    factory, _, stats, clock = tcp(
        transport="tls", handshake_timeout=10.0, first_frame_timeout=60.0, idle_timeout=600.0
    )
    slow = connect(factory)
    quick = connect(factory)
    assert slow is not None and quick is not None
    assert isinstance(quick, TLSStream)
    quick.handshakeCompleted()  # no client certificate asked: accepted
    clock.advance(9.9)
    assert not transport(slow).disconnecting
    clock.advance(0.1)
    assert stats.handshake_timeouts == 1 and transport(slow).disconnecting
    assert not transport(quick).disconnecting


def test_first_frame_deadline_counts_only_whole_frames() -> None:
    """A connection that has sent no whole frame first_frame_timeout seconds after the accept
    is aborted and counted, even while it dribbles bytes; after a frame, idle_timeout rules."""
    factory, sink, stats, clock = tcp(first_frame_timeout=30.0, idle_timeout=600.0)
    loris = connect(factory)
    sender = connect(factory)
    assert loris is not None and sender is not None
    for ch in LINE[:29]:
        clock.advance(1)
        loris.dataReceived(bytes([ch]))
    sender.dataReceived(LINE + b"\n")
    clock.advance(1)
    assert stats.first_frame_timeouts == 1 and transport(loris).disconnecting
    clock.advance(598)
    assert len(sink) == 1 and not transport(sender).disconnecting
    clock.advance(1)
    assert stats.idle_timeouts == 1 and transport(sender).disconnecting


def test_deadlines_off_schedule_nothing() -> None:
    """All three timeouts 0: no timer at all."""
    factory, _, _, clock = tcp(
        transport="tls", handshake_timeout=0.0, first_frame_timeout=0.0, idle_timeout=0.0
    )
    assert connect(factory) is not None
    assert not clock.getDelayedCalls()


# -- item 2: per-sender connections per IPv6 prefix, the descriptor budget ---------------------


def test_sender_key_is_the_ipv6_prefix_or_the_ipv4_address() -> None:
    from applianced.receiver.limits import sender_key

    assert sender_key("2001:db8:1:2:a::1", 64) == "2001:db8:1:2::/64"
    assert sender_key("2001:db8:1:2:a::1", 128) == "2001:db8:1:2:a::1"
    assert sender_key("2001:db8:1:2:a::1", 48) == "2001:db8:1::/48"
    assert sender_key("192.0.2.7", 64) == "192.0.2.7"
    # Hosts behind one NAT64 translator or Teredo relay are counted one by one, as the jails
    # count them (rules.addresses.host_only).
    assert sender_key("64:ff9b::c633:6407", 64) == "64:ff9b::c633:6407"
    assert sender_key("2001:0:4136:e378:8000:63bf:3fff:fdd2", 64).endswith("fdd2")


def test_one_ipv6_prefix_cannot_take_every_slot() -> None:
    """20 addresses of one /64 opening 30 connections each share one per-sender budget; a
    sender of another prefix still connects (the issue's report: 600 from one /64 took all)."""
    factory, sink, stats, _ = tcp(max_connections=512, max_connections_per_sender=32)
    opened = [connect(factory, f"2001:db8:0:1::{i:x}") for i in range(1, 21) for _ in range(30)]
    assert sum(p is not None for p in opened) == 32
    assert stats.refused_connections_sender == 600 - 32
    mail = connect(factory, "2001:db8:0:2::25")
    assert mail is not None
    mail.dataReceived(LINE + b"\n")
    assert len(sink) == 1


def test_connection_prefix_v6_128_counts_each_address() -> None:
    factory, _, _, _ = tcp(max_connections_per_sender=2, connection_prefix_v6=128)
    assert all(connect(factory, f"2001:db8::{i}") for i in range(1, 5) for _ in range(2))


def test_descriptor_budget_refuses_before_the_process_runs_out(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Open connections of all listeners together stay below RLIMIT_NOFILE less a reserve for
    the control socket, the store and the kernel: beyond it, refused and counted."""
    monkeypatch.setattr(edge_module, "descriptor_limit", lambda: edge_module.FD_RESERVE + 3)
    factory, _, stats, _ = tcp(max_connections=0, max_connections_per_sender=0)
    other = SyslogTCPFactory(conf(), lambda m: None, stats, Clock())
    assert connect(factory, "127.0.0.1") and connect(other, "127.0.0.1")
    assert connect(factory, "127.0.0.1")
    assert connect(other, "127.0.0.1") is None
    assert stats.refused_connections_descriptors == 1 and stats.open_connections == 3


# -- item 6: the last LF frame of a closing connection ----------------------------------------


def test_last_lf_frame_is_delivered_when_the_peer_closes() -> None:
    """A peer that sends a line without its LF and closes: the line is a message."""
    factory, sink, stats, _ = tcp()
    proto = connect(factory)
    assert proto is not None
    proto.dataReceived(LINE + b"\n" + LINE)
    assert len(sink) == 1
    proto.connectionLost(Failure(ConnectionDone()))
    assert len(sink) == 2 and stats.frame_errors == 0


@pytest.mark.parametrize("reason", [ConnectionLost(), ConnectionAborted()])
def test_cut_frame_of_a_lost_connection_is_a_frame_error(reason: Exception) -> None:
    """A reset or our own abort (a deadline) leaves a part of a line: counted, not parsed."""
    factory, sink, stats, _ = tcp()
    proto = connect(factory)
    assert proto is not None
    proto.dataReceived(LINE[:40])
    proto.connectionLost(Failure(reason))
    assert (len(sink), stats.frame_errors) == (0, 1)


def test_cut_counted_frame_is_a_frame_error() -> None:
    factory, sink, stats, _ = tcp()
    proto = connect(factory)
    assert proto is not None
    proto.dataReceived(b"%d %s" % (len(LINE), LINE[:-1]))
    proto.connectionLost(Failure(ConnectionDone()))
    assert (len(sink), stats.frame_errors) == (0, 1)


# -- the new counters reach status and the metrics ---------------------------------------------


def test_edge_counters_reach_status_and_prometheus(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """handshake_timeouts, first_frame_timeouts and refusals at the descriptor budget show in
    the status dict (appliancectl status --json) and in the scrape."""
    from tests.test_metrics import scrape, start, value

    monkeypatch.setattr(edge_module, "descriptor_limit", lambda: edge_module.FD_RESERVE + 2)
    app, clock, _ = start(tmp_path)
    c = conf(transport="tls", handshake_timeout=5.0, first_frame_timeout=20.0)
    factory = SyslogTCPFactory(c, app.receive, app.receiver_stats, clock)
    shaking = connect(factory)
    framing = connect(factory)
    assert shaking is not None and isinstance(framing, TLSStream)
    framing.handshakeCompleted()
    assert connect(factory) is None  # the budget: two connections
    clock.advance(20)
    receiver = views.status(app)["receiver"]
    assert receiver["handshake_timeouts"] == 1 and receiver["first_frame_timeouts"] == 1
    assert receiver["refused_connections_descriptors"] == 1
    s = scrape(app)
    assert value(s, "applianced_handshake_timeouts_total") == 1
    assert value(s, "applianced_first_frame_timeouts_total") == 1
    assert value(s, "applianced_refused_connections_total", limit="descriptors") == 1


def test_a_budget_below_max_connections_is_logged_at_start(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A descriptor limit too low for max_connections is said once, at start, with the fix."""
    from twisted.logger import capturedLogs, formatEvent

    def started(limit: int) -> list[str]:
        monkeypatch.setattr(edge_module, "descriptor_limit", lambda: limit)
        with capturedLogs() as events:
            ListenerService(conf(), lambda m: None, ReceiverStats(), _Reactor()).startService()
        return [formatEvent(e) for e in events]

    (logged,) = started(edge_module.FD_RESERVE + 100)
    assert "max_connections 512 is above the descriptor budget of 100" in logged
    assert "LimitNOFILE" in logged
    assert started(edge_module.FD_RESERVE + 512) == []
