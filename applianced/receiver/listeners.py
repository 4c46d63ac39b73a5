"""The listeners' life: bind a configured listener's socket (UDP, TCP, TLS), rebind and
reconfigure them on reload, close them (and their connections) on stop. The protocols that read
the bytes are ``udp.py`` and ``streams.py``; what they share (the sender checks, the gate, the
parse, the counters) is ``edge.py``.

Socket options: a large UDP receive buffer (``rcvbuf``) and SO_REUSEPORT (``reuse_port``); what
the kernel still drops on a full UDP buffer is counted (``kerneldrops.py``). A TLS listener wraps
TLS only around the connections the TCP factory accepts, so a refused peer is closed on accept,
before any TLS. ``service.make_service`` builds ``Listeners``; the Reloader calls ``update``.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from ipaddress import ip_address
from typing import Any

from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IListeningPort, IProtocolFactory
from twisted.internet.task import LoopingCall

from applianced.conf.schema import ListenerConf
from applianced.receiver.edge import FD_RESERVE, Edge, ReceiverStats, Sink, log
from applianced.receiver.kerneldrops import DROPS_EVERY, socket_drops
from applianced.receiver.senders import SenderBook
from applianced.receiver.streams import SyslogTCPFactory, TLSFactory
from applianced.receiver.tls import ServerTLS, TLSFileError, server_context
from applianced.receiver.udp import UDP_READ_SIZE, SyslogUDP
from applianced.rules.engine import Gate

__all__ = ["ListenerService", "Listeners", "open_udp_warning"]

_SO_RCVBUFFORCE = 33  # Linux (asm-generic/socket.h); Python's socket module does not name it


class ListenerService(Service):
    """Opens one configured listener when started and closes it when stopped."""

    def __init__(
        self,
        conf: ListenerConf,
        sink: Sink,
        stats: ReceiverStats,
        reactor: Any,
        gate: Gate | None = None,
        senders: SenderBook | None = None,
    ) -> None:
        self.conf = conf
        self.sink = sink
        self.gate = gate
        self.senders = senders
        self.stats = stats
        self.reactor = reactor
        self.port: IListeningPort | None = None
        self._edge: Edge | None = None
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
                proto = SyslogUDP(c, self.sink, self.stats, self.reactor, self.gate, self.senders)
                if c.reuse_port:
                    with _bind_reusing_port(c, socket.SOCK_DGRAM) as sock:
                        port = self.reactor.adoptDatagramPort(
                            sock.fileno(), sock.family, proto, UDP_READ_SIZE
                        )
                else:
                    port = self.reactor.listenUDP(c.port, proto, interface=c.address)
                    port.maxPacketSize = UDP_READ_SIZE
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
                factory = SyslogTCPFactory(
                    c, self.sink, self.stats, self.reactor, self.gate, self.senders
                )
                try:
                    self._tls = ServerTLS(server_context(c.tls))
                except TLSFileError as e:
                    raise CannotListenError(c.address, c.port, e) from None
                port = self._listen_tcp(TLSFactory(self._tls, False, factory))
                self._edge = factory.edge
            else:
                factory = SyslogTCPFactory(
                    c, self.sink, self.stats, self.reactor, self.gate, self.senders
                )
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
                    limit=self._edge.descriptors,
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


def _clash(old: ListenerConf, new: ListenerConf) -> bool:
    # TCP and TLS listeners share the TCP port space: tcp -> tls on one port is a rebind.
    return (old.transport == "udp") == (new.transport == "udp") and old.port == new.port
