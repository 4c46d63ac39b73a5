"""Fuzzing the listener protocols, not just the parser and framer: arbitrary datagrams and
arbitrary TCP byte streams (any split into reads, any senders) fed to SyslogUDP and the TCP
factory on a task.Clock with a list as sink. Nothing raises, nothing stalls (a fresh
connection and a valid datagram still get through afterwards), every datagram is accounted
for by exactly one counter, and a connection never buffers more than max_message_size.

A coverage-guided run of the same targets with atheris is ``bench/fuzz_listeners.py``;
``test_atheris_bounded_run`` runs it briefly when atheris is installed.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from ipaddress import ip_network
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from applianced.conf.schema import ListenerConf
from applianced.receiver.edge import ReceiverStats
from applianced.receiver.streams import SyslogTCPFactory
from applianced.receiver.udp import SyslogUDP
from applianced.rules.message import SyslogMessage

REPO = Path(__file__).resolve().parents[2]
SIZE = 2048
CONF = ListenerConf(
    "udp",
    "127.0.0.1",
    0,
    (ip_network("127.0.0.0/8"),),
    SIZE,
    max_rate_per_sender=50.0,
    max_burst_per_sender=20,
    max_connections=4,
    max_connections_per_sender=2,
    idle_timeout=5.0,
)
VALID = b"<38>Nov 22 10:00:01 mx sshd[1]: Failed password for root from 203.0.113.9 port 1 ssh2"
SENDERS = st.sampled_from(["127.0.0.1", "127.0.0.2", "192.0.2.7", "::1", "::ffff:127.0.0.3"])

# Syslog-looking pieces make the parser go deeper than pure noise does.
PIECES = st.sampled_from(
    [
        b"<",
        b">",
        b"<38>",
        b"<165>1 ",
        b"2003-10-11T22:14:15.003Z ",
        b"Nov 22 10:00:01 ",
        b"- ",
        b'[x@1 a="b"] ',
        b"\n",
        b"\r\n",
        b"\x00",
        b"120 ",
        b"99999999 ",
        b" ",
        b"\xff\xfe",
        VALID,
    ]
)
CHUNK = st.one_of(st.binary(max_size=300), st.lists(PIECES, max_size=12).map(b"".join))
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def accounted(stats: ReceiverStats) -> int:
    return (
        stats.received
        + stats.parse_errors
        + stats.oversize
        + stats.refused_senders
        + stats.rate_limited
    )


@FUZZ
@given(st.lists(st.tuples(CHUNK, SENDERS, st.floats(0, 2)), max_size=60))
def test_udp_any_datagrams(datagrams: list[tuple[bytes, str, float]]) -> None:
    """Any datagrams from any senders at any pace: no exception, each counted exactly once,
    only allowed senders reach the sink, and a valid datagram still gets through after."""
    sink: list[SyslogMessage] = []
    stats, clock = ReceiverStats(), Clock()
    proto = SyslogUDP(CONF, sink.append, stats, clock)
    for data, host, pause in datagrams:
        clock.advance(pause)
        proto.datagramReceived(data, (host, 514))
    assert accounted(stats) == len(datagrams)
    assert len(sink) == stats.received == stats.received_udp
    assert all(m.sender in ("127.0.0.1", "127.0.0.2", "127.0.0.3") for m in sink)  # canonical
    clock.advance(10)  # a full bucket again
    proto.datagramReceived(VALID, ("127.0.0.1", 514))
    assert sink[-1].msg.startswith("Failed password")


@FUZZ
@given(
    st.lists(st.tuples(st.integers(0, 5), CHUNK, st.floats(0, 3)), max_size=60),
    st.lists(SENDERS, min_size=6, max_size=6),
)
def test_tcp_any_streams(steps: list[tuple[int, bytes, float]], hosts: list[str]) -> None:
    """Up to six connections (some refused by the caps or the allowlist) fed any bytes in any
    reads at any pace: no exception, each open connection buffers at most max_message_size,
    the open-connection gauge matches, and afterwards a new connection delivers a message."""
    sink: list[SyslogMessage] = []
    stats, clock = ReceiverStats(), Clock()
    factory = SyslogTCPFactory(replace(CONF, transport="tcp"), sink.append, stats, clock)
    conns = []
    for host in hosts:
        proto = factory.buildProtocol(IPv4Address("TCP", host, 4000))
        if proto is None:
            conns.append(None)
            continue
        transport = StringTransport()
        proto.makeConnection(transport)
        conns.append((proto, transport))
    opened = [c for c in conns if c is not None]
    # Silent connections are evicted (aborted) to make room: those still hold no slot.
    assert stats.open_connections == len(opened) - stats.evicted_pending <= CONF.max_connections
    refused = stats.refused_senders + stats.refused_connections_total
    assert len(opened) + refused + stats.refused_connections_sender == len(hosts)
    for index, data, pause in steps:
        clock.advance(pause)
        conn = conns[index]
        if conn is None:
            continue
        proto, transport = conn
        if transport.disconnecting or not transport.connected:
            proto.connectionLost(None)  # type: ignore[arg-type]
            conns[index] = None
            continue
        proto.dataReceived(data)
        assert proto.framer.pending <= SIZE + 16  # type: ignore[attr-defined]  # + its count
    assert len(sink) == stats.received
    live = sum(1 for c in conns if c is not None)  # evicted ones gave their slot back early
    assert stats.open_connections == len(factory.edge.streams) <= live
    for conn in conns:
        if conn is not None:
            conn[0].connectionLost(None)  # type: ignore[arg-type]
    assert stats.open_connections == 0 and factory.edge.connections.total == 0
    clock.advance(60)
    proto = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 4001))
    assert proto is not None
    proto.makeConnection(StringTransport())
    before = len(sink)
    proto.dataReceived(VALID + b"\n")
    assert len(sink) == before + 1


@pytest.mark.timeout(120)
def test_atheris_bounded_run() -> None:
    """A short coverage-guided run (atheris, a fixed number of inputs) finds no exception."""
    pytest.importorskip("atheris")
    done = subprocess.run(
        [sys.executable, "-m", "bench.fuzz_listeners", "-runs=3000", "-seed=1"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=110,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
