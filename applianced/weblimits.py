"""What the daemon's two HTTP servers share at their edge, before any request is read: no
access log, a request body above a few KiB refused with 413 before it is stored (twisted.web
would spool it to a temporary file), and caps on the connections open at once and from one
address (a flood of idle ones would take the descriptors the syslog listeners and the control
socket need). ``decisions/server.py`` (the stream for bouncers) and ``metrics.py`` (Prometheus)
build their sites with ``QuietSite`` and listen through ``Capped``; twisted.web closes a
connection idle for a minute. ``refused`` is called for each refusal (the stream counts them).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from typing import Any

from twisted.internet.interfaces import IAddress, IProtocolFactory
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from twisted.web import http
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

__all__ = ["MAX_BODY", "MAX_CONNECTIONS", "MAX_PER_ADDRESS", "Capped", "QuietSite"]

# A bouncer or Prometheus keeps one connection open (an nginx or HAProxy bouncer, one per
# worker): room for a few hundred mail hosts.
MAX_CONNECTIONS = 512
MAX_PER_ADDRESS = 32
MAX_BODY = 4096  # bytes; bouncers and Prometheus send GET and HEAD without a body
_TOO_LARGE = (
    b"HTTP/1.1 413 Content Too Large\r\nConnection: close\r\n"
    b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
)


class _LimitedRequest(Request):
    """A request whose body above ``MAX_BODY``, or of unknown length (chunked), is refused
    with 413 and its connection closed; what still arrives is dropped and the request never
    rendered."""

    refused = False

    def gotLength(self, length: int | None) -> None:
        if length is not None and length <= MAX_BODY:
            super().gotLength(length)
            return
        self.refused = True
        channel: Any = self.channel  # an HTTPChannel of a QuietSite
        channel.site.refused()
        body = json.dumps({"message": f"a request body is refused above {MAX_BODY} bytes"})
        channel.transport.write(_TOO_LARGE % (len(body), body.encode()))
        channel.loseConnection()

    def handleContentChunk(self, data: bytes) -> None:
        if not self.refused:
            super().handleContentChunk(data)

    def process(self) -> None:
        if not self.refused:
            super().process()


class QuietSite(Site):
    """A site without an access log (scrapes and polls every few seconds) whose requests
    refuse a body above ``MAX_BODY``."""

    noisy = False

    def __init__(self, resource: Resource, reactor: Any, refused: Callable[[], None]) -> None:
        super().__init__(resource, requestFactory=_LimitedRequest, reactor=reactor)
        self.refused = refused

    def log(self, request: http.Request) -> None:
        pass


class Capped(WrappingFactory):
    """At most ``MAX_CONNECTIONS`` connections, ``MAX_PER_ADDRESS`` from one address: past
    either, a new one is closed at once (``refused`` called). Outermost, so that a TLS
    handshake holds a place too."""

    noisy = False  # no "Starting factory" line: in our namespace, it would pass as ours

    def __init__(self, wrapped: IProtocolFactory, refused: Callable[[], None]) -> None:
        super().__init__(wrapped)
        self.refused = refused
        self.hosts: dict[ProtocolWrapper, str] = {}
        self.per_host: Counter[str] = Counter()

    # None closes the connection at once (twisted's Factory allows it; WrappingFactory's
    # annotation does not say so).
    def buildProtocol(self, addr: IAddress | None) -> ProtocolWrapper | None:  # type: ignore[override]
        host = getattr(addr, "host", "")
        if len(self.hosts) >= MAX_CONNECTIONS or self.per_host[host] >= MAX_PER_ADDRESS:
            self.refused()
            return None
        protocol = super().buildProtocol(addr)
        if protocol is not None:
            self.hosts[protocol] = host
            self.per_host[host] += 1
        return protocol

    def unregisterProtocol(self, p: ProtocolWrapper) -> None:
        super().unregisterProtocol(p)
        host = self.hosts.pop(p, None)
        if host is not None:
            self.per_host[host] -= 1
            if not self.per_host[host]:
                del self.per_host[host]
