"""Coverage-guided fuzzing of the listener protocols with atheris (libFuzzer).

``python -m bench.fuzz_listeners [libFuzzer flags]``, e.g. ``-runs=100000`` or
``-max_total_time=600`` for a long run, ``-runs=3000`` as in the test suite. Each input is
split into a UDP datagram, TCP reads over two connections and clock steps, fed to SyslogUDP and
the TCP factory on a task.Clock. Any exception escaping the protocols, a connection buffering
beyond its limit or a counter that does not add up is a crash that libFuzzer reports with the
input. Needs ``atheris`` (pinned in requirements.txt; skipped by the tests when missing).
"""

from __future__ import annotations

import sys
from ipaddress import ip_network
from typing import TYPE_CHECKING

from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

if TYPE_CHECKING:
    from applianced.conf.schema import ListenerConf

SIZE = 2048


def listener_conf(transport: str) -> ListenerConf:
    from applianced.conf.schema import ListenerConf

    return ListenerConf(
        transport,  # type: ignore[arg-type]
        "127.0.0.1",
        0,
        (ip_network("127.0.0.0/8"),),
        SIZE,
        max_rate_per_sender=100.0,
        max_burst_per_sender=50,
        idle_timeout=5.0,
    )


def one_input(data: bytes) -> None:
    """The fuzz target: raises AssertionError on a broken invariant, anything else is a bug."""
    # Imported here so that ``main`` can import (and instrument) the package first.
    from applianced.receiver.edge import ReceiverStats
    from applianced.receiver.streams import SyslogTCPFactory
    from applianced.receiver.udp import SyslogUDP

    sink: list[object] = []
    stats, clock = ReceiverStats(), Clock()
    udp = SyslogUDP(listener_conf("udp"), sink.append, stats, clock)
    factory = SyslogTCPFactory(listener_conf("tcp"), sink.append, stats, clock)
    streams = []
    for port in (1, 2):
        proto = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", port))
        assert proto is not None
        proto.makeConnection(StringTransport())
        streams.append(proto)
    datagrams = 0
    # Records: one control byte (target, clock step), then up to 255 bytes of payload.
    i = 0
    while i + 2 <= len(data):
        control, length = data[i], data[i + 1]
        payload = data[i + 2 : i + 2 + length]
        i += 2 + length
        clock.advance((control >> 4) * 0.25)
        target = control & 3
        if target == 0:
            udp.datagramReceived(payload, ("127.0.0.1", 514))
            datagrams += 1
        else:
            stream = streams[target & 1]
            if not stream.transport.disconnecting:  # type: ignore[union-attr]
                stream.dataReceived(payload)
            assert stream.framer.pending <= SIZE + 16  # type: ignore[attr-defined]
    assert len(sink) == stats.received
    assert (
        stats.received_udp + stats.parse_errors + stats.oversize + stats.rate_limited >= datagrams
    )


def main(argv: list[str]) -> None:
    import atheris  # type: ignore[import-not-found,unused-ignore]

    # Coverage feedback from our package only (instrumenting Twisted too is slow to start).
    with atheris.instrument_imports(include=["applianced"]):
        import applianced.receiver.listeners  # noqa: F401
    atheris.Setup([argv[0], *argv[1:]], one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
