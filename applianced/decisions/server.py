"""The decision stream's HTTP side: CrowdSec's Local API endpoints that bouncers call, on
twisted.web, over TLS unless on loopback (``[decisions]``, checked by ``conf/tables.py``).

- ``GET /v1/decisions/stream?startup=true|false`` (+ ``scopes``, ``origins``,
  ``scenarios_containing``, ``scenarios_not_containing``): ``{"new": [...], "deleted": [...]}``
  (either may be null), from ``stream.DecisionStream``.
- ``GET /v1/decisions?ip=|range=|scope=&value=``: the active decisions covering it, or null.
- ``HEAD`` on either: 200, empty, no pull recorded (a bouncer's liveness probe).

Every request carries a bouncer's key in ``X-Api-Key`` (``bouncers.KeyRing``); a missing or
wrong key gets 403 ``{"message": "access forbidden"}`` and counts in the appliance's health
(``bouncer_refused``, shown by status and the metrics), logged with its address at most once a
minute. Before any key is read, ``weblimits.py`` caps the connections and refuses request
bodies; each refusal counts in ``bouncer_connections_refused``.

Each bouncer's last pull, address and User-Agent (``crowdsec-firewall-bouncer/v0.0.25``) are
kept in memory for ``bouncer list``. ``service.py`` builds ``DecisionService``; ``control.py``
reads ``seen``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IListeningPort
from twisted.logger import Logger, LogLevel
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure
from twisted.web import http
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

from applianced.appliance import Appliance
from applianced.bouncers import BouncerError, KeyRing
from applianced.conf.schema import DecisionsConf
from applianced.decisions.lapi import Filters, QueryError, decision
from applianced.decisions.stream import DecisionStream, Full, longest
from applianced.logs import log_text
from applianced.receiver.tls import ServerTLS, server_context
from applianced.rules.decision import Ban, IPNetwork
from applianced.weblimits import Capped, QuietSite

__all__ = ["DecisionService", "DecisionsResource", "Seen"]

log = Logger()

InThread = Callable[[Callable[[], bytes]], Deferred[bytes]]  # deferToThread's shape

_FORBIDDEN = json.dumps({"message": "access forbidden"}).encode()
_NOT_FOUND = json.dumps({"message": "not found"}).encode()
_PATHS: tuple[list[bytes], ...] = ([], [b"stream"])  # under /v1/decisions
_REFUSAL_LOG_EVERY = 60.0  # seconds between two lines about refused keys
_TOO_LARGE = (
    b"HTTP/1.1 413 Content Too Large\r\nConnection: close\r\n"
    b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
)


@dataclass(slots=True)
class Seen:
    """A bouncer's last pull: when (the appliance's clock), from where, which software."""

    at: float
    address: str
    version: str


class DecisionsResource(Resource):
    """``/v1/decisions`` and ``/v1/decisions/stream``."""

    isLeaf = True

    def __init__(
        self,
        appliance: Appliance,
        keys: KeyRing,
        stream: DecisionStream,
        seen: dict[str, Seen],
        in_thread: InThread | None = None,
    ) -> None:
        """``in_thread``: full answers (a startup pull: every ban) are built there, so the
        reactor keeps receiving meanwhile; without it, inline."""
        super().__init__()
        self.in_thread = in_thread
        self.appliance = appliance
        self.keys = keys
        self.stream = stream
        self.seen = seen
        self._refusal_logged: float | None = None  # when a refusal was last logged

    def render_HEAD(self, request: Request) -> bytes:
        if request.postpath not in _PATHS:
            request.setResponseCode(http.NOT_FOUND)
            return _NOT_FOUND
        if self._bouncer(request) is None:
            return _FORBIDDEN
        request.setHeader(b"content-type", b"text/plain")
        return b""

    def render_GET(self, request: Request) -> bytes | int:
        if request.postpath not in _PATHS:
            request.setResponseCode(http.NOT_FOUND)
            return _NOT_FOUND
        bouncer = self._bouncer(request)
        if bouncer is None:
            return _FORBIDDEN
        args = {
            k.decode("utf-8", "replace"): [v.decode("utf-8", "replace") for v in vs]
            for k, vs in (request.args or {}).items()
        }
        try:
            filters = Filters.of(args)
        except QueryError as e:
            request.setResponseCode(http.BAD_REQUEST)
            return json.dumps({"message": str(e)}).encode()
        now = self.appliance.clock.seconds()
        self.appliance.health.bouncer_pulls += 1
        self.seen[bouncer] = Seen(
            now, getattr(request.getClientAddress(), "host", ""), _agent(request)
        )
        request.setHeader(b"content-type", b"application/json")
        if request.postpath != [b"stream"]:
            if filters.within is not None:
                return _query(self._covering(filters.within), filters, now)
            every = list(self.appliance.active.values())
            return self._full(request, lambda: _query(every, filters, now))
        startup = args.get("startup", ["false"])[-1].lower() == "true"
        answer = self.stream.pull(bouncer, startup, filters, now)
        if not isinstance(answer, Full):
            return _json(answer)
        return self._full(request, lambda: _json(answer.build()))

    def _covering(self, within: IPNetwork) -> list[Ban]:
        """The bans on ``within`` or on a wider network holding it: a lookup per prefix and
        jail, whatever the number of bans."""
        book, jails = self.appliance.active, list(self.appliance.engine.jails)
        wider = (within.supernet(new_prefix=p) for p in range(within.prefixlen + 1))
        return [b for net in wider for j in jails if (b := book.get((j, net))) is not None]

    def _full(self, request: Request, build: Callable[[], bytes]) -> bytes | int:
        """An answer that holds every ban (a snapshot taken by the caller): built in
        ``in_thread`` when given, so the reactor keeps receiving (a startup pull of 100,000
        bans takes seconds: README, Performance)."""
        if self.in_thread is None:
            return build()
        self._later(request, self.in_thread(build))
        return NOT_DONE_YET

    def _later(self, request: Request, body: Deferred[bytes]) -> None:
        """Answer ``request`` with ``body`` when it is built (not if the bouncer left)."""
        gone: list[bool] = []
        request.notifyFinish().addErrback(lambda _: gone.append(True))

        def write(data: bytes) -> None:
            if not gone:
                request.write(data)
                request.finish()

        def failed(reason: Failure) -> None:
            log.failure("building a bouncer's full answer", reason)
            if not gone:
                request.setResponseCode(http.INTERNAL_SERVER_ERROR)
                request.finish()

        body.addCallbacks(write, failed)

    def _bouncer(self, request: Request) -> str | None:
        """The requesting bouncer's name; None (403 set, counted, logged) for a missing or
        wrong key, or a keys file that cannot be read."""
        key = (request.getHeader(b"x-api-key") or b"").decode("utf-8", "replace").strip()
        level, why = LogLevel.warn, "its X-Api-Key is missing or not a registered bouncer's"
        try:
            name = self.keys.lookup(key)
        except BouncerError as e:  # every bouncer is refused until the file is repaired
            name, level, why = None, LogLevel.error, str(e)
        if name is None:
            request.setResponseCode(http.FORBIDDEN)
            request.setHeader(b"content-type", b"application/json")
            self.appliance.health.bouncer_refused += 1
            self._log_refusal(request, level, why)
        return name

    def _log_refusal(self, request: Request, level: LogLevel, why: str) -> None:
        """Where a refused request came from and why, at most once a minute (a storm of them
        writes no more)."""
        now = self.appliance.clock.seconds()
        if self._refusal_logged is not None and now - self._refusal_logged < _REFUSAL_LOG_EVERY:
            return
        self._refusal_logged = now
        log.emit(
            level,
            "decision stream: refused a request from {address} ({agent}): {why} ({count} "
            "refused since start; this line at most once a minute); `appliancectl bouncer "
            "list` shows the registered ones, `bouncer add NAME` makes a key",
            address=getattr(request.getClientAddress(), "host", "?"),
            agent=log_text(_agent(request), 200) or "no User-Agent",
            why=why,
            count=self.appliance.health.bouncer_refused,
        )


def _agent(request: Request) -> str:
    """The request's User-Agent (the bouncer's software and version), bounded."""
    return (request.getHeader(b"user-agent") or b"").decode("utf-8", "replace")[:200]


def _json(body: Any) -> bytes:
    return json.dumps(body, separators=(",", ":")).encode()


def _query(bans: Iterable[Ban], filters: Filters, now: float) -> bytes:
    """``GET /v1/decisions``'s answer: the decisions ``filters`` admit, one per network, or
    null."""
    return _json([decision(b, now) for b in longest(b for b in bans if filters.admits(b))] or None)


class DecisionService(Service):
    """Listens on ``[decisions] address:port`` while running (TLS with a certificate)."""

    def __init__(
        self,
        conf: DecisionsConf,
        appliance: Appliance,
        keys: KeyRing,
        reactor: Any,
        in_thread: InThread | None = None,
    ) -> None:
        self.conf = conf
        self.reactor = reactor
        self.health = appliance.health
        self.keys = keys
        self.seen: dict[str, Seen] = {}
        self.stream = DecisionStream(appliance.active, lambda: appliance.engine.jails)
        self.resource = DecisionsResource(appliance, keys, self.stream, self.seen, in_thread)
        self.port: IListeningPort | None = None

    def site(self) -> Site:
        root = Resource()
        v1 = Resource()
        root.putChild(b"v1", v1)
        v1.putChild(b"decisions", self.resource)
        return QuietSite(root, self.reactor, self._refused)

    def factory(self) -> Capped:
        """What listens: the site, within TLS when configured, within the connection caps."""
        factory: Any = self.site()
        if self.conf.tls is not None:
            factory = TLSMemoryBIOFactory(ServerTLS(server_context(self.conf.tls)), False, factory)
        return Capped(factory, self._refused)

    def _refused(self) -> None:
        self.health.bouncer_connections_refused += 1

    def startService(self) -> None:
        """Bind; raises CannotListenError (or TLSFileError for files gone since the check)."""
        self.port = self.reactor.listenTCP(
            self.conf.port, self.factory(), interface=self.conf.address
        )
        super().startService()

    def stopService(self) -> Deferred[None] | None:
        super().stopService()
        port, self.port = self.port, None
        return port.stopListening() if port is not None else None

    def bouncers(self) -> list[dict[str, Any]]:
        """Each registered bouncer and its last pull (for ``bouncer list``); a removed one's
        stream place is forgotten."""
        names = self.keys.names()
        for gone in set(self.seen) - set(names):
            del self.seen[gone]
            self.stream.forget(gone)
        listed: list[dict[str, Any]] = []
        for name in names:
            s = self.seen.get(name)
            listed.append(
                {
                    "name": name,
                    "last_pull": None if s is None else s.at,
                    "address": None if s is None else s.address,
                    "version": None if s is None else s.version,
                }
            )
        return listed
