"""The UDP edge under a flood (issue 15, item 7): refusing a source outside allowed_senders
keeps nothing per source; a flood forging the allowed sender's address cannot spend that
sender's rate budget; the kernel's drops on the listener's socket are counted.

Listeners on a task.Clock; the kernel drops on a real loopback socket nobody reads."""

from __future__ import annotations

import socket
import tracemalloc
from collections.abc import Iterator
from dataclasses import replace
from ipaddress import IPv4Address, IPv6Address, ip_address, ip_network
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.task import Clock

from applianced import views
from applianced.conf.schema import ListenerConf
from applianced.receiver.allowlist import Allowlist
from applianced.receiver.edge import ReceiverStats
from applianced.receiver.kerneldrops import DROPS_EVERY, socket_drops, table_drops
from applianced.receiver.listeners import ListenerService
from applianced.receiver.udp import SyslogUDP
from applianced.rules.decision import IPNetwork
from applianced.rules.message import SyslogMessage
from tests.receiver.test_sockets import Reactor

REAL = "192.0.2.2"
CONF = ListenerConf("udp", "127.0.0.1", 0, (ip_network(f"{REAL}/32"),), 8192)


def failure(n: int) -> bytes:
    return (
        b"<38>Nov 22 10:00:01 mx sshd[1]: Failed password for root from 203.0.113.%d port 1 ssh2"
        % n
    )


def udp(**kw: object) -> tuple[SyslogUDP, list[SyslogMessage], ReceiverStats]:
    sink: list[SyslogMessage] = []
    stats = ReceiverStats()
    return SyslogUDP(replace(CONF, **kw), sink.append, stats, Clock()), sink, stats  # type: ignore[arg-type]


# -- refusing keeps nothing per source -------------------------------------------------------


def test_refusing_a_flood_of_distinct_sources_keeps_nothing_per_source() -> None:
    """20,000 datagrams from 20,000 distinct sources outside allowed_senders are refused and
    counted, and the memory they leave behind does not grow with the number of sources (a
    per-source cache of 4,096 entries would hold hundreds of KiB)."""
    proto, sink, stats = udp()
    sources = [f"198.18.{i >> 8}.{i & 255}" for i in range(20_000)]
    proto.datagramReceived(failure(1), ("198.19.0.1", 1))  # warm up: the first complaint
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        for source in sources:
            proto.datagramReceived(failure(1), (source, 40000))
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    grown = sum(s.size_diff for s in after.compare_to(before, "filename") if s.size_diff > 0)
    assert stats.refused_senders == 20_001 and sink == []
    assert grown < 32 << 10, f"{grown} bytes kept after refusing 20,000 sources"


NETWORKS = st.one_of(
    st.builds(lambda a, p: ip_network(f"{IPv4Address(a)}/{p}", strict=False),
              st.integers(0, 2**32 - 1), st.integers(0, 32)),
    st.builds(lambda a, p: ip_network(f"{IPv6Address(a)}/{p}", strict=False),
              st.integers(0, 2**128 - 1), st.integers(0, 128)),
)  # fmt: skip
ADDRESSES = st.one_of(
    st.integers(0, 2**32 - 1).map(lambda a: str(IPv4Address(a))),
    st.integers(0, 2**128 - 1).map(lambda a: str(IPv6Address(a))),
    st.integers(0, 2**32 - 1).map(lambda a: f"::ffff:{IPv4Address(a)}"),
    st.integers(0, 2**128 - 1).map(lambda a: f"{IPv6Address(a)}%eth0"),
    st.text(max_size=12),
)


def expected(host: str, networks: list[IPNetwork]) -> bool:
    try:
        address = ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    if address.version == 6 and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in net for net in networks)


@given(st.lists(NETWORKS, max_size=6), st.lists(ADDRESSES, min_size=1, max_size=20))
def test_allowlist_agrees_with_ipaddress(networks: list[IPNetwork], hosts: list[str]) -> None:
    """Exact senders, networks, both versions, a dual-stack socket's IPv4 peer, a zone
    index and garbage: the allowlist answers as ``address in network`` does."""
    allow = Allowlist(tuple(networks))
    for net in networks:
        hosts.append(str(net.network_address))
        hosts.append(str(net.broadcast_address))
    for host in hosts:
        assert (host in allow) == expected(host, networks), host


def test_allowlist_examples() -> None:
    allow = Allowlist((ip_network("192.0.2.2/32"), ip_network("2001:db8::/32")))
    assert "192.0.2.2" in allow and "::ffff:192.0.2.2" in allow
    assert "2001:db8:1::5%eth0" in allow and "2001:DB8::1" in allow
    assert "192.0.2.3" not in allow and "2001:db9::1" not in allow and "" not in allow
    assert "192.0.2.2.1" not in allow and "localhost" not in allow


# -- a forged flood cannot spend the allowed sender's budget --------------------------------


def test_forged_flood_cannot_spend_the_allowed_senders_udp_budget() -> None:
    """A flood forging the allowed sender's address (the source of a datagram is unproven)
    runs far over max_rate_per_sender; the real sender's failures that follow at once are
    all read: on UDP the per-sender budget would only hand the forger the real sender's
    messages. 15 offenders, 3 failures each, as issue 15 measured."""
    proto, sink, stats = udp(max_rate_per_sender=100.0, max_burst_per_sender=10)
    for _ in range(5_000):
        proto.datagramReceived(b"<38>Nov 22 10:00:01 mx sshd[1]: noise", (REAL, 40000))
    for n in range(15):
        for _ in range(3):
            proto.datagramReceived(failure(n), (REAL, 514))
    assert stats.rate_limited == 0
    assert len(sink) == 5_000 + 45


# -- kernel drops ----------------------------------------------------------------------------


TABLE = """\
   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
  136: 0100007F:1592 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 5151 2 0000000000000000 0
  137: 0100007F:1593 00000000:0000 07 00000000:00003300 00:00000000 00000000     0        0 77123 2 0000000000000000 1234
"""  # noqa: E501


def test_drops_are_read_from_the_sockets_line() -> None:
    assert table_drops(TABLE, 77123) == 1234
    assert table_drops(TABLE, 5151) == 0
    assert table_drops(TABLE, 1) is None


@pytest.fixture
def bound() -> Iterator[socket.socket]:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock


def fill(sock: socket.socket, count: int) -> None:
    """Send ``count`` 1,000-byte datagrams to ``sock``, which nobody reads."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
        for _ in range(count):
            sender.sendto(b"x" * 1000, sock.getsockname())


def queued(sock: socket.socket) -> int:
    sock.setblocking(False)
    n = 0
    while True:
        try:
            sock.recv(2000)
        except BlockingIOError:
            return n
        n += 1


def test_socket_drops_count_what_the_full_buffer_refused(bound: socket.socket) -> None:
    """A 4 KiB buffer nobody reads: of 200 datagrams, every one not queued was dropped, and
    the socket's drop counter says how many."""
    bound.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    assert socket_drops(bound) == 0
    fill(bound, 200)
    assert socket_drops(bound) == 200 - queued(bound) > 0


def test_listener_counts_its_kernel_drops_across_a_rebind() -> None:
    """The UDP listener adds its socket's kernel drops to ReceiverStats.udp_kernel_drops every
    DROPS_EVERY seconds and once more when it closes; a new socket adds to the count."""
    reactor, stats = Reactor(), ReceiverStats()  # binds for real, never reads
    conf = replace(CONF, rcvbuf=4096)
    total = 0
    for _ in range(2):
        service = ListenerService(conf, lambda m: None, stats, reactor)
        service.startService()
        sock = reactor.ports[-1].socket
        fill(sock, 100)
        reactor.advance(DROPS_EVERY)
        dropped = socket_drops(sock)
        assert dropped is not None and dropped > 0
        assert stats.udp_kernel_drops == total + dropped
        fill(sock, 100)
        total += socket_drops(sock) or 0
        service.stopService()  # counts the drops since the last look
        assert stats.udp_kernel_drops == total
        reactor.advance(DROPS_EVERY)  # stopped: no reading of a closed socket
        assert stats.udp_kernel_drops == total
    assert reactor.getDelayedCalls() == []


def test_kernel_drops_reach_status_and_prometheus(tmp_path: Path) -> None:
    """udp_kernel_drops shows in the status dict (appliancectl status --json) and as
    applianced_udp_kernel_drops_total in the scrape."""
    from tests.test_metrics import scrape, start, value

    app, _, _ = start(tmp_path)
    reactor = Reactor()
    conf = replace(CONF, rcvbuf=4096)
    service = ListenerService(conf, app.receive, app.receiver_stats, reactor)
    service.startService()
    fill(reactor.ports[-1].socket, 100)
    service.stopService()
    dropped = app.receiver_stats.udp_kernel_drops
    assert dropped > 0
    assert views.status(app)["receiver"]["udp_kernel_drops"] == dropped
    assert value(scrape(app), "applianced_udp_kernel_drops_total") == dropped
