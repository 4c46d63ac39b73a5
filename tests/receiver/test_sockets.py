"""The listeners' socket options: the UDP receive buffer (``rcvbuf``) and SO_REUSEPORT
(``reuse_port``), on real loopback sockets; the reactor is a stand-in that records what the
listener asks of it, so nothing runs a reactor."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from dataclasses import replace
from ipaddress import ip_network
from pathlib import Path
from typing import Any, Literal

import pytest
from twisted.internet.error import CannotListenError, ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import capturedLogs
from twisted.python.failure import Failure

from applianced.conf.load import parse_config
from applianced.conf.schema import ListenerConf
from applianced.errors import ConfigError
from applianced.receiver import listeners
from applianced.receiver.edge import ReceiverStats
from applianced.receiver.listeners import ListenerService
from applianced.receiver.streams import SyslogStream

CONF = ListenerConf("udp", "127.0.0.1", 0, (ip_network("127.0.0.0/8"),), 8192)


class Port:
    """What a reactor returns for a bound socket: a duplicate of it, as Twisted keeps."""

    def __init__(self, fd: int, family: int, kind: int) -> None:
        self.socket = socket.socket(family, kind, fileno=socket.dup(fd))
        self.maxPacketSize = 8192

    def getHandle(self) -> socket.socket:
        return self.socket

    def stopListening(self) -> None:
        self.socket.close()


class Reactor(Clock):
    """Records the calls a ListenerService makes; binds like the real one does."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: list[str] = []
        self.ports: list[Port] = []

    def _port(self, sock: socket.socket) -> Port:
        port = Port(sock.fileno(), sock.family, sock.type)
        self.ports.append(port)
        return port

    def listenUDP(self, port: int, proto: Any, interface: str) -> Port:
        self.asked.append("listenUDP")
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind((interface, port))
            return self._port(sock)

    def adoptDatagramPort(self, fd: int, family: int, proto: Any, size: int) -> Port:
        self.asked.append("adoptDatagramPort")
        return self._port(socket.socket(family, socket.SOCK_DGRAM, fileno=socket.dup(fd)))

    def adoptStreamPort(self, fd: int, family: int, factory: Any) -> Port:
        self.asked.append("adoptStreamPort")
        return self._port(socket.socket(family, socket.SOCK_STREAM, fileno=socket.dup(fd)))


@pytest.fixture
def reactor() -> Iterator[Reactor]:
    r = Reactor()
    yield r
    for port in r.ports:
        port.stopListening()


def _rcvbuf(sock: socket.socket) -> int:
    return sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) // 2  # Linux reports 2x


def test_udp_listener_gets_the_receive_buffer_it_asks_for(reactor: Reactor) -> None:
    """rcvbuf sets SO_RCVBUF (past net.core.rmem_max as root, where the daemon runs); a
    reload with another rcvbuf resizes the bound socket."""
    service = ListenerService(
        replace(CONF, rcvbuf=3 << 20), lambda m: None, ReceiverStats(), reactor
    )
    service.startService()
    (port,) = reactor.ports
    assert _rcvbuf(port.socket) == 3 << 20
    service.reconfigure(replace(CONF, rcvbuf=5 << 20))
    assert _rcvbuf(port.socket) == 5 << 20


def test_a_smaller_buffer_than_asked_is_logged(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the privilege to pass rmem_max the kernel grants less: the operator is told
    which sysctl to raise."""

    class Unprivileged(socket.socket):
        def setsockopt(self, level: int, option: int, value: Any, *rest: Any) -> None:
            if option == listeners._SO_RCVBUFFORCE:
                raise PermissionError("not root")
            super().setsockopt(level, socket.SO_RCVBUF, min(value, 65536))

    with Unprivileged(socket.AF_INET, socket.SOCK_DGRAM) as sock, capturedLogs() as events:
        listeners._set_rcvbuf(sock, 1 << 20, "udp/127.0.0.1:514")
    (event,) = events
    assert event["granted"] < 1 << 20 and event["size"] == 1 << 20
    assert "net.core.rmem_max" in event["log_format"]


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_reuse_port_lets_two_listeners_share_a_port(
    reactor: Reactor, transport: Literal["udp", "tcp"]
) -> None:
    """With reuse_port, a second daemon binds the same port (the kernel spreads the load);
    a socket without it still cannot."""
    first = ListenerService(
        replace(CONF, transport=transport, reuse_port=True),
        lambda m: None,
        ReceiverStats(),
        reactor,
    )
    first.startService()
    port = reactor.ports[0].socket.getsockname()[1]
    again = replace(CONF, transport=transport, port=port, reuse_port=True)
    ListenerService(again, lambda m: None, ReceiverStats(), reactor).startService()
    adopt = "adoptDatagramPort" if transport == "udp" else "adoptStreamPort"
    assert reactor.asked == [adopt, adopt]
    kind = socket.SOCK_DGRAM if transport == "udp" else socket.SOCK_STREAM
    assert all(p.socket.type == kind for p in reactor.ports)
    with socket.socket(socket.AF_INET, kind) as plain, pytest.raises(OSError):
        plain.bind(("127.0.0.1", port))


def test_reuse_port_bind_failure_is_cannot_listen(reactor: Reactor) -> None:
    """An address the host does not have: CannotListenError, as listenUDP raises it."""
    conf = replace(CONF, address="192.0.2.1", reuse_port=True)
    with pytest.raises(CannotListenError):
        ListenerService(conf, lambda m: None, ReceiverStats(), reactor).startService()
    assert reactor.ports == []


def test_changing_reuse_port_is_a_rebind_and_rcvbuf_is_not() -> None:
    """A reload keeps a socket only when what it is bound with is unchanged."""

    def key(conf: ListenerConf) -> object:
        return ListenerService(conf, lambda m: None, ReceiverStats(), Clock()).key

    assert key(replace(CONF, reuse_port=True)) != key(CONF) == key(replace(CONF, rcvbuf=1 << 20))


@pytest.mark.parametrize(
    ("line", "error"),
    [
        ("rcvbuf = 100", "between 4096"),
        ('rcvbuf = "8M"', "whole number"),
        ("reuse_port = 1", "true or false"),
    ],
)
def test_socket_options_are_checked_at_load(tmp_path: Path, line: str, error: str) -> None:
    text = f'[[listeners]]\ntransport = "udp"\nport = 5514\n{line}\n'
    with pytest.raises(ConfigError, match=error):
        parse_config(text, tmp_path / "appliance.toml")


def test_socket_options_load() -> None:
    text = '[[listeners]]\ntransport = "udp"\nport = 5514\nrcvbuf = 1048576\nreuse_port = true\n'
    (conf,) = parse_config(text, Path("/nonexistent/appliance.toml")).listeners
    assert (conf.rcvbuf, conf.reuse_port) == (1 << 20, True)
    (default,) = parse_config("[[listeners]]\nport = 5514\n", Path("/x.toml")).listeners
    assert (default.rcvbuf, default.reuse_port) == (8 << 20, False)


def test_a_stopped_listener_closes_its_connections(reactor: Reactor) -> None:
    """A listener a reload removes (or rebinds: tcp to tls on one port) closes the connections
    it accepted: they would go on feeding the jails under the old settings and outside the new
    listener's limits. What such a connection had half sent is a frame error, not a line."""
    conf = replace(CONF, transport="tcp", reuse_port=True)
    service = ListenerService(conf, lambda m: None, ReceiverStats(), reactor)
    service.startService()
    edge = service._edge
    assert edge is not None
    stream = SyslogStream(edge, "127.0.0.1", "127.0.0.1")
    transport = StringTransport()
    stream.makeConnection(transport)
    stream.dataReceived(b"<38>Nov 22 10:00:01 mx sshd[1]: Failed password for root from 203.0")
    service.stopService()
    assert transport.disconnecting
    stream.connectionLost(Failure(ConnectionDone()))
    assert edge.stats.frame_errors == 1 and edge.stats.received == 0
