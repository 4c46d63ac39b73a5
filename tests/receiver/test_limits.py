"""Listener limits on a task.Clock: per-sender rate, connection caps, idle timeout, the
open-UDP warning, and the config keys that set them."""

from __future__ import annotations

import socket
from dataclasses import replace
from ipaddress import ip_network
from pathlib import Path

import pytest
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.error import ConnectionDone
from twisted.internet.protocol import Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from applianced import views
from applianced.conf.load import parse_config
from applianced.conf.schema import ListenerConf
from applianced.errors import ConfigError
from applianced.receiver.edge import ReceiverStats
from applianced.receiver.limits import ConnectionLimiter, RateLimiter
from applianced.receiver.listeners import open_udp_warning
from applianced.receiver.streams import SyslogTCPFactory
from applianced.receiver.udp import SyslogUDP
from applianced.rules.message import SyslogMessage

LOOPBACK = (ip_network("127.0.0.0/8"),)
LINE = b"<38>Nov 22 10:00:01 mx sshd[1]: Failed password for root from 203.0.113.9 port 1 ssh2"


def conf(**kw: object) -> ListenerConf:
    return replace(ListenerConf("udp", "127.0.0.1", 0, LOOPBACK, 8192), **kw)  # type: ignore[arg-type]


def udp(**kw: object) -> tuple[SyslogUDP, list[SyslogMessage], ReceiverStats, Clock]:
    sink: list[SyslogMessage] = []
    stats, clock = ReceiverStats(), Clock()
    return SyslogUDP(conf(**kw), sink.append, stats, clock), sink, stats, clock


def tcp(**kw: object) -> tuple[SyslogTCPFactory, list[SyslogMessage], ReceiverStats, Clock]:
    sink: list[SyslogMessage] = []
    stats, clock = ReceiverStats(), Clock()
    factory = SyslogTCPFactory(conf(transport="tcp", **kw), sink.append, stats, clock)
    return factory, sink, stats, clock


def connect(
    factory: SyslogTCPFactory, host: str = "127.0.0.1"
) -> tuple[Protocol, StringTransport] | None:
    proto = factory.buildProtocol(IPv4Address("TCP", host, 40000))
    if proto is None:
        return None
    transport = StringTransport()
    proto.makeConnection(transport)
    return proto, transport


def lose(proto: Protocol) -> None:
    proto.connectionLost(None)  # type: ignore[arg-type]


# -- the token bucket ------------------------------------------------------------------------


def test_bucket_allows_the_burst_then_the_rate() -> None:
    """A fresh sender may send ``burst`` at once, then ``rate`` a second; tokens refill with
    the clock and never beyond the burst."""
    r = RateLimiter(rate=10, burst=5)
    assert [r.allow("a", 0.0) for _ in range(6)] == [True] * 5 + [False]
    assert r.allow("a", 0.05) is False  # half a token
    assert r.allow("a", 0.1) is True
    assert r.allow("a", 0.1) is False
    assert sum(r.allow("a", 100.0) for _ in range(10)) == 5  # capped at the burst


def test_bucket_is_per_sender_and_zero_rate_is_unlimited() -> None:
    """One sender's excess does not touch another's bucket; rate 0 never refuses."""
    r = RateLimiter(rate=1, burst=1)
    assert r.allow("a", 0.0) and not r.allow("a", 0.0)
    assert r.allow("b", 0.0)
    off = RateLimiter(rate=0, burst=1)
    assert all(off.allow("a", 0.0) for _ in range(1000))
    assert len(off) == 0


def test_bucket_table_is_bounded() -> None:
    """Many senders keep at most ``max_senders`` buckets, the oldest dropped first."""
    r = RateLimiter(rate=1, burst=1, max_senders=8)
    for i in range(1000):
        r.allow(f"10.0.{i // 256}.{i % 256}", 0.0)
    assert len(r) == 8


def test_connection_limiter_total_and_per_sender() -> None:
    """admit names the limit reached; closing frees the slot; 0 means no limit."""
    c = ConnectionLimiter(max_total=3, max_per_sender=2)
    c.opened("a")
    c.opened("a")
    assert c.admit("a") == "sender"
    assert c.admit("b") is None
    c.opened("b")
    assert c.admit("c") == "total"
    c.closed("a")
    assert c.admit("a") is None and c.per_sender == {"a": 1, "b": 1}
    c.closed("a")
    c.closed("b")
    assert c.total == 0 and c.per_sender == {}
    assert ConnectionLimiter(0, 0).admit("x") is None


# -- listeners ------------------------------------------------------------------------------


def test_tcp_rate_limit_drops_and_counts_the_excess() -> None:
    """Over the sender's rate, messages are dropped and counted; the clock refills; two
    connections of one sender share its bucket, another sender has its own."""
    factory, sink, stats, clock = tcp(max_rate_per_sender=100.0, max_burst_per_sender=10)
    first, second, other = (connect(factory, h) for h in ("127.0.0.1", "127.0.0.1", "127.0.0.2"))
    assert first and second and other
    first[0].dataReceived((LINE + b"\n") * 30)
    second[0].dataReceived((LINE + b"\n") * 20)
    assert (len(sink), stats.rate_limited, stats.received) == (10, 40, 10)
    other[0].dataReceived(LINE + b"\n")
    assert len(sink) == 11
    clock.advance(0.05)  # 5 tokens
    first[0].dataReceived((LINE + b"\n") * 10)
    assert (len(sink), stats.rate_limited) == (16, 45)


def test_tcp_rate_budget_is_shared_by_an_ipv6_prefix() -> None:
    """Connections from two addresses of one IPv6 /64 (connection_prefix_v6) spend one budget,
    as they share one connection count; another /64 has its own."""
    factory, sink, stats, _ = tcp(
        allowed_senders=(ip_network("2001:db8::/32"),),
        max_rate_per_sender=1.0,
        max_burst_per_sender=5,
    )
    peers = [
        factory.buildProtocol(IPv6Address("TCP", host, 40000))
        for host in ("2001:db8:1::1", "2001:db8:1::2", "2001:db8:2::1")
    ]
    for proto in peers:
        assert proto is not None
        proto.makeConnection(StringTransport())
    a, b, other = peers
    assert a is not None and b is not None and other is not None
    a.dataReceived((LINE + b"\n") * 4)
    b.dataReceived((LINE + b"\n") * 4)
    other.dataReceived((LINE + b"\n") * 4)
    assert (len(sink), stats.rate_limited) == (9, 3)


def test_udp_has_no_per_sender_rate() -> None:
    """On UDP the source is unproven: max_rate_per_sender does not apply (a flood forging the
    sender's address would spend its budget; tests/receiver/test_udp_edge.py)."""
    proto, sink, stats, _ = udp(max_rate_per_sender=1.0, max_burst_per_sender=1)
    for _ in range(50):
        proto.datagramReceived(LINE, ("127.0.0.1", 1))
    assert (len(sink), stats.rate_limited) == (50, 0)


def test_tcp_rate_limit_counts_frames_not_reads() -> None:
    """One read holding many frames is limited per message."""
    factory, sink, stats, _ = tcp(max_rate_per_sender=1.0, max_burst_per_sender=3)
    got = connect(factory)
    assert got is not None
    got[0].dataReceived((LINE + b"\n") * 20)
    assert (len(sink), stats.rate_limited) == (3, 17)


def test_total_connection_cap_refuses_and_counts() -> None:
    """Beyond max_connections, with every open connection sending, no protocol is built; a
    closed connection frees a slot."""
    factory, _, stats, _ = tcp(max_connections=2, max_connections_per_sender=0)
    a = connect(factory, "127.0.0.1")
    b = connect(factory, "127.0.0.2")
    assert a and b
    for proto, _ in (a, b):
        proto.dataReceived(LINE + b"\n")
    assert connect(factory, "127.0.0.3") is None
    assert (stats.refused_connections_total, stats.open_connections) == (1, 2)
    lose(a[0])
    assert stats.open_connections == 1
    assert connect(factory, "127.0.0.3") is not None
    assert stats.connections == 3


def test_at_max_connections_the_oldest_silent_connection_makes_room() -> None:
    """Issue 15, item 2: peers from a wide allowed_senders that hold slots without sending a
    whole frame (a stalled TLS handshake) cannot keep a real sender out: at max_connections
    the oldest of them is aborted and counted, and the newcomer gets its slot. A connection
    that has sent a frame is never evicted; with none silent, the newcomer is refused."""
    factory, sink, stats, clock = tcp(max_connections=3, max_connections_per_sender=0)
    sender = connect(factory, "127.0.0.1")
    assert sender is not None
    sender[0].dataReceived(LINE + b"\n")
    silent = [connect(factory, f"127.0.0.{n}") for n in (2, 3)]
    assert all(silent)
    clock.advance(1)
    newcomer = connect(factory, "127.0.0.4")
    assert newcomer is not None
    assert silent[0] is not None and silent[0][1].disconnecting  # the oldest silent one
    assert silent[1] is not None and not silent[1][1].disconnecting
    assert not sender[1].disconnecting
    assert (stats.evicted_pending, stats.open_connections) == (1, 3)
    newcomer[0].dataReceived(LINE + b"\n")
    silent[0][0].connectionLost(Failure(ConnectionDone()))  # the abort completes: no recount
    assert stats.open_connections == 3
    fifth = connect(factory, "127.0.0.5")  # evicts 127.0.0.3
    assert fifth is not None
    fifth[0].dataReceived(LINE + b"\n")
    assert connect(factory, "127.0.0.6") is None  # every open one has sent: refused
    assert (stats.evicted_pending, stats.refused_connections_total) == (2, 1)
    assert len(sink) == 3


def test_a_line_cut_by_our_own_close_is_not_read() -> None:
    """A reload that drops a sender from allowed_senders closes its connections; a line it
    had half sent is a frame error, never read: ``...IP address 203.0.113.1`` cut from
    ``203.0.113.13`` would name the wrong address."""
    factory, sink, stats, _ = tcp()
    got = connect(factory, "127.0.0.2")
    assert got is not None
    proto, transport = got
    proto.dataReceived(LINE + b"\n" + LINE[:-10])
    factory.edge.reconfigure(conf(transport="tcp", allowed_senders=(ip_network("127.0.0.1/32"),)))
    assert transport.disconnecting
    proto.connectionLost(Failure(ConnectionDone()))
    assert (len(sink), stats.frame_errors) == (1, 1)


def test_a_reload_applies_new_deadlines_to_open_connections() -> None:
    """idle_timeout turned on by a reload closes a connection that was open and silent."""
    factory, _, stats, clock = tcp(idle_timeout=0.0, first_frame_timeout=0.0)
    got = connect(factory)
    assert got is not None
    got[0].dataReceived(LINE + b"\n")
    clock.advance(100)
    factory.edge.reconfigure(conf(transport="tcp", idle_timeout=60.0, first_frame_timeout=0.0))
    assert got[1].disconnecting and stats.idle_timeouts == 1  # silent for 100 s already
    other = connect(factory)
    assert other is not None
    other[0].dataReceived(LINE + b"\n")
    clock.advance(59)
    assert not other[1].disconnecting
    clock.advance(1)
    assert other[1].disconnecting and stats.idle_timeouts == 2


def test_per_sender_cap_leaves_other_senders_alone() -> None:
    """A sender at max_connections_per_sender is refused; others still connect."""
    factory, sink, stats, _ = tcp(max_connections=0, max_connections_per_sender=2)
    first = [connect(factory, "127.0.0.1") for _ in range(5)]
    assert sum(c is not None for c in first) == 2
    assert stats.refused_connections_sender == 3
    other = connect(factory, "127.0.0.2")
    assert other is not None
    other[0].dataReceived(LINE + b"\n")
    assert len(sink) == 1


def test_idle_timeout_closes_a_silent_connection_and_counts() -> None:
    """No byte for idle_timeout seconds: the connection is aborted and counted."""
    factory, _, stats, clock = tcp(idle_timeout=30.0, first_frame_timeout=0.0)
    got = connect(factory)
    assert got is not None
    proto, transport = got
    clock.advance(29)
    assert not transport.disconnecting
    clock.advance(1)
    assert stats.idle_timeouts == 1
    lose(proto)
    assert stats.open_connections == 0 and not clock.getDelayedCalls()


def test_idle_timeout_restarts_with_each_read_slow_loris_included() -> None:
    """Bytes arriving keep the connection; a slow sender within the timeout is not cut, one
    that stops is; the timer is not rescheduled per read."""
    factory, sink, stats, clock = tcp(idle_timeout=10.0, first_frame_timeout=0.0)
    got = connect(factory)
    assert got is not None
    proto, transport = got
    for ch in LINE + b"\n":
        clock.advance(9)
        proto.dataReceived(bytes([ch]))
        assert len(clock.getDelayedCalls()) == 1
    assert len(sink) == 1 and stats.idle_timeouts == 0 and not transport.disconnecting
    clock.advance(10)
    assert stats.idle_timeouts == 1


def test_idle_timeout_zero_never_closes() -> None:
    """idle_timeout = 0 (and no first-frame deadline) schedules nothing."""
    factory, _, stats, clock = tcp(idle_timeout=0.0, first_frame_timeout=0.0)
    assert connect(factory) is not None
    assert not clock.getDelayedCalls()
    clock.advance(10**6)
    assert stats.idle_timeouts == 0


def test_connection_lost_cancels_the_idle_timer() -> None:
    """A closed connection leaves no timer behind."""
    factory, _, _, clock = tcp(idle_timeout=10.0)
    got = connect(factory)
    assert got is not None
    lose(got[0])
    assert not clock.getDelayedCalls()


def test_reconfigure_applies_new_limits() -> None:
    """A reload's new rate and caps apply to the bound listener."""
    factory, sink, stats, _ = tcp(max_rate_per_sender=1.0, max_burst_per_sender=1)
    got = connect(factory)
    assert got is not None
    got[0].dataReceived((LINE + b"\n") * 2)
    assert stats.rate_limited == 1
    factory.edge.reconfigure(conf(transport="tcp", max_rate_per_sender=0.0))
    got[0].dataReceived((LINE + b"\n") * 100)
    assert len(sink) == 101


# -- the open-UDP warning -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("transport", "address", "senders", "warns"),
    [
        ("udp", "0.0.0.0", ["0.0.0.0/0"], True),
        ("udp", "192.0.2.1", ["::/0"], True),
        ("udp", "::", ["192.0.2.0/24", "::/0"], True),
        ("udp", "127.0.0.1", ["0.0.0.0/0"], False),
        ("udp", "::1", ["::/0"], False),
        ("udp", "0.0.0.0", ["192.0.2.2/32"], False),
        ("tcp", "0.0.0.0", ["0.0.0.0/0"], False),
    ],
)
def test_open_udp_warning(transport: str, address: str, senders: list[str], warns: bool) -> None:
    """Only a UDP listener off loopback that allows every sender is warned about."""
    c = conf(
        transport=transport,
        address=address,
        allowed_senders=tuple(ip_network(s) for s in senders),
    )
    warning = open_udp_warning(c)
    assert (warning is not None) is warns
    if warning:
        assert "forged" in warning and "allowed_senders" in warning


def test_open_udp_warning_is_logged_at_start(request: pytest.FixtureRequest) -> None:
    """Binding such a UDP listener logs the warning once; a restricted one logs nothing."""
    from types import SimpleNamespace

    from twisted.logger import capturedLogs

    from applianced.receiver.listeners import ListenerService

    class Reactor(Clock):
        def listenUDP(self, *args: object, **kwargs: object) -> SimpleNamespace:
            return SimpleNamespace(getHandle=lambda: udp)

    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    request.addfinalizer(udp.close)

    def warnings(c: ListenerConf) -> list[str]:
        with capturedLogs() as events:
            ListenerService(c, lambda m: None, ReceiverStats(), Reactor()).startService()
        return [str(e.get("warning")) for e in events if e.get("warning")]

    (logged,) = warnings(conf(address="0.0.0.0", allowed_senders=(ip_network("0.0.0.0/0"),)))
    assert "udp/0.0.0.0:0 accepts syslog from any sender" in logged
    assert warnings(conf(address="0.0.0.0")) == []


# -- config ---------------------------------------------------------------------------------

BASE = """\
[daemon]
state_dir = "state"
control_socket = "control.sock"

[receiver]
{receiver}

[[listeners]]
transport = "tcp"
{listener}
"""


def load(tmp_path: Path, receiver: str = "", listener: str = "") -> ListenerConf:
    path = tmp_path / "appliance.toml"
    text = BASE.format(receiver=receiver, listener=listener)
    path.write_text(text)
    return parse_config(text, path).listeners[0]


def test_limit_defaults(tmp_path: Path) -> None:
    """Without keys, the schema's safe defaults apply."""
    c = load(tmp_path)
    assert (c.max_connections, c.max_connections_per_sender) == (512, 32)
    assert (c.idle_timeout, c.max_rate_per_sender, c.max_burst_per_sender) == (600.0, 1e4, 20000)
    assert (c.handshake_timeout, c.first_frame_timeout, c.connection_prefix_v6) == (10.0, 30.0, 64)


def test_limits_from_receiver_and_per_listener(tmp_path: Path) -> None:
    """[receiver] sets the defaults of every listener; [[listeners]] overrides them."""
    c = load(
        tmp_path,
        receiver='max_connections = 10\nidle_timeout = "5m"\nmax_rate_per_sender = 50',
        listener="max_connections = 20\nmax_burst_per_sender = 7\nmax_rate_per_sender = 2.5",
    )
    assert (c.max_connections, c.idle_timeout, c.max_rate_per_sender) == (20, 300.0, 2.5)
    assert c.max_burst_per_sender == 7 and c.max_connections_per_sender == 32
    assert load(tmp_path, listener="idle_timeout = 0").idle_timeout == 0.0
    c = load(
        tmp_path,
        receiver='handshake_timeout = "5s"\nconnection_prefix_v6 = 56',
        listener='first_frame_timeout = "1m"\nhandshake_timeout = 0',
    )
    assert (c.handshake_timeout, c.first_frame_timeout, c.connection_prefix_v6) == (0, 60, 56)


@pytest.mark.parametrize(
    ("receiver", "listener", "key", "line"),
    [
        ("", "max_connections = -1", "listeners[0].max_connections", 10),
        ("", 'max_connections_per_sender = "x"', "listeners[0].max_connections_per_sender", 10),
        ("", 'idle_timeout = "soon"', "listeners[0].idle_timeout", 10),
        ("", "handshake_timeout = -1", "listeners[0].handshake_timeout", 10),
        ('first_frame_timeout = "x"', "", "receiver.first_frame_timeout", 6),
        ("connection_prefix_v6 = 0", "", "receiver.connection_prefix_v6", 6),
        ("", "connection_prefix_v6 = 129", "listeners[0].connection_prefix_v6", 10),
        ("max_rate_per_sender = -5", "", "receiver.max_rate_per_sender", 6),
        ("", "max_rate_per_sender = true", "listeners[0].max_rate_per_sender", 10),
        ("max_message_size = 1024", "", "receiver.max_message_size", 6),
        ("", "max_message_size = 2047", "listeners[0].max_message_size", 10),
    ],
)
def test_limit_errors_name_file_line_and_key(
    tmp_path: Path, receiver: str, listener: str, key: str, line: int
) -> None:
    """Bad limits fail the load with the file, the line and the key (RFC 5425's 2 KiB minimum
    for max_message_size included)."""
    with pytest.raises(ConfigError) as e:
        load(tmp_path, receiver, listener)
    assert (
        e.value.key == key and e.value.line == line and e.value.path == tmp_path / "appliance.toml"
    )


# -- the counters reach status and the metrics ----------------------------------------------


def test_limit_counters_reach_status_and_prometheus(tmp_path: Path) -> None:
    """rate_limited, refused connections (per limit), idle timeouts and open connections show
    in the status dict (appliancectl status) and in the scrape."""
    from tests.test_metrics import scrape, start, value

    app, clock, _ = start(tmp_path)
    stats = app.receiver_stats
    limited = SyslogTCPFactory(
        conf(transport="tcp", max_rate_per_sender=1.0, max_burst_per_sender=2),
        app.receive,
        stats,
        clock,
    ).buildProtocol(IPv4Address("TCP", "127.0.0.9", 1))
    assert limited is not None
    limited.makeConnection(StringTransport())
    limited.dataReceived((LINE + b"\n") * 5)
    t = SyslogTCPFactory(
        conf(transport="tcp", max_connections=2, max_connections_per_sender=1, idle_timeout=5.0),
        app.receive,
        stats,
        clock,
    )
    first = t.buildProtocol(IPv4Address("TCP", "127.0.0.1", 1))
    assert first is not None
    first.makeConnection(StringTransport())
    assert t.buildProtocol(IPv4Address("TCP", "127.0.0.1", 2)) is None  # per sender
    second = t.buildProtocol(IPv4Address("TCP", "127.0.0.2", 3))
    assert second is not None
    second.makeConnection(StringTransport())
    for sending in (first, second):  # a silent one would be evicted to make room
        sending.dataReceived(LINE + b"\n")
    assert t.buildProtocol(IPv4Address("TCP", "127.0.0.3", 4)) is None  # total
    clock.advance(5)
    receiver = views.status(app)["receiver"]
    assert receiver["rate_limited"] == 3 and receiver["idle_timeouts"] == 2
    assert receiver["refused_connections_sender"] == 1
    # StringTransport never calls connectionLost: all three still count as open.
    assert receiver["refused_connections_total"] == 1 and receiver["open_connections"] == 3
    s = scrape(app)
    assert value(s, "applianced_rate_limited_messages_total") == 3
    assert value(s, "applianced_refused_connections_total", limit="total") == 1
    assert value(s, "applianced_refused_connections_total", limit="sender") == 1
    assert value(s, "applianced_idle_timeouts_total") == 2
    assert value(s, "applianced_open_connections") == 3


def test_peer_addresses_are_canonical() -> None:
    """A dual-stack socket's IPv4 peer and a zone index are reported as the plain address."""
    from applianced.receiver.edge import canonical_host

    assert canonical_host("::ffff:192.0.2.1") == "192.0.2.1"
    assert canonical_host("fe80::1%eth0") == "fe80::1"
    assert canonical_host("2001:DB8::1") == "2001:db8::1"
