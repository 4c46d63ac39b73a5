"""Prometheus metrics: the HTTP endpoint (``GET /metrics`` in the text format) and its registry.

What is counted and how it reads is ``metricfamilies.py`` (the appliance's stats snapshot at
scrape time, no Prometheus call on the hot path) and ``kernelelements.py`` (the kernel's
elements per set, listed in a worker thread before a scrape, a listing reused while young).

``service.py`` imports this module only when ``[metrics] enabled = true`` (prometheus-client and
twisted.web are a tenth of a second of start-up), builds the registry (its own
``CollectorRegistry``, never the global one, so that tests and several appliances in one process
stay apart) and starts ``MetricsService``: ``GET /metrics`` on ``address:port`` (loopback by
default), through ``weblimits.py``'s caps on connections and request bodies.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.process_collector import ProcessCollector
from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IListeningPort
from twisted.python.failure import Failure
from twisted.web import http
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

from applianced.metricfamilies import ApplianceCollector
from applianced.weblimits import Capped, QuietSite

if TYPE_CHECKING:
    from applianced.appliance import Appliance
    from applianced.conf.schema import MetricsConf
    from applianced.kernelelements import KernelElements

__all__ = ["MetricsResource", "MetricsService", "make_registry"]


def make_registry(
    appliance: Appliance, process: bool = True, kernel: KernelElements | None = None
) -> CollectorRegistry:
    """A registry of its own (not prometheus_client's global one) with the appliance's
    metrics, the kernel's elements when ``kernel``, and the process's memory, CPU and file
    descriptors when ``process``."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ApplianceCollector(appliance))
    if kernel is not None:
        registry.register(kernel)
    if process:
        ProcessCollector(registry=registry)
    return registry


class MetricsResource(Resource):
    """``GET /metrics``: the registry in the Prometheus text format; ``before``, when given,
    runs first (the kernel's listing, in a thread) and the answer waits for it."""

    isLeaf = True

    def __init__(
        self, registry: CollectorRegistry, before: Callable[[], Deferred[None]] | None = None
    ) -> None:
        super().__init__()
        self.registry = registry
        self.before = before

    def render_GET(self, request: Request) -> bytes | int:
        request.setHeader(b"Content-Type", CONTENT_TYPE_LATEST.encode("ascii"))
        if self.before is None:
            return generate_latest(self.registry)

        def answer(_: object) -> None:
            request.write(generate_latest(self.registry))
            request.finish()

        def failed(reason: Failure) -> None:
            request.setResponseCode(http.INTERNAL_SERVER_ERROR)
            request.write(f"cannot read the kernel's sets: {reason.getErrorMessage()}\n".encode())
            request.finish()

        self.before().addCallbacks(answer, failed)
        return NOT_DONE_YET


class MetricsService(Service):
    """Listens on ``[metrics] address:port`` (TCP) while running; started after the control
    socket, so a busy port stops the daemon at start with a clear error."""

    def __init__(
        self,
        conf: MetricsConf,
        registry: CollectorRegistry,
        reactor: Any,
        before: Callable[[], Deferred[None]] | None = None,
    ) -> None:
        self.conf = conf
        self.registry = registry
        self.reactor = reactor
        self.before = before
        self.port: IListeningPort | None = None

    def site(self) -> Site:
        root = Resource()
        root.putChild(b"metrics", MetricsResource(self.registry, self.before))
        return QuietSite(root, self.reactor, lambda: None)

    def startService(self) -> None:
        """Bind (within weblimits' connection caps); raises CannotListenError."""
        self.port = self.reactor.listenTCP(
            self.conf.port, Capped(self.site(), lambda: None), interface=self.conf.address
        )
        super().startService()

    def stopService(self) -> Deferred[None] | None:
        super().stopService()
        port, self.port = self.port, None
        return port.stopListening() if port is not None else None
