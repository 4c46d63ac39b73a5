"""Hostname lookups for jails whose ``usedns`` is "yes" or "warn" (the latter logs each): a
``<HOST>`` that was a name, resolved off the reactor thread, at most ``MAX_LOOKUPS`` at once
(more are dropped and counted).

The Appliance keeps a ``HostLookups`` when it was given a resolver and hands it each
``Lookup`` the engine returns; ``found`` counts the failure for every address. ``service.py``
passes ``resolve``, which asks the system's resolver in a worker thread.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Sequence

from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThread
from twisted.logger import Logger
from twisted.python.failure import Failure

from applianced.health import Health
from applianced.rules.addresses import parse_address
from applianced.rules.decision import IPAddress, Lookup

__all__ = ["MAX_LOOKUPS", "HostLookups", "Resolver", "resolve"]

log = Logger()

MAX_LOOKUPS = 64  # hostname lookups in flight at once; more are dropped
MAX_WARNED = 1024  # (jail, name) pairs warned of once each (usedns = warn); then forgotten

Resolver = Callable[[str], "Deferred[Sequence[IPAddress]]"]


class HostLookups:
    """Resolves each ``Lookup`` with ``resolver`` and hands its addresses to ``found``."""

    def __init__(
        self,
        resolver: Resolver,
        health: Health,
        found: Callable[[Lookup, Sequence[IPAddress]], None],
        limit: int = MAX_LOOKUPS,
    ) -> None:
        self._resolver = resolver
        self._health = health
        self._found = found
        self._limit = limit
        self._running = 0
        self._warned: set[tuple[str, str]] = set()

    def lookup(self, lookup: Lookup) -> None:
        """Start resolving ``lookup.host``, unless ``limit`` lookups are already running."""
        if self._running >= self._limit:
            self._health.dns_dropped += 1
            return
        self._running += 1
        if lookup.warn and (lookup.jail, lookup.host) not in self._warned:
            if len(self._warned) >= MAX_WARNED:
                self._warned.clear()
            self._warned.add((lookup.jail, lookup.host))
            log.warn(
                "jail {jail} resolves the host name {host} to ban it (usedns = warn): "
                "whoever controls its DNS chooses the addresses",
                jail=lookup.jail,
                host=lookup.host,
            )

        def failed(reason: Failure) -> None:
            self._health.dns_failed += 1
            log.info(
                "cannot resolve {host} for jail {jail}: {error}",
                host=lookup.host,
                jail=lookup.jail,
                error=reason.getErrorMessage(),
            )

        def done(result: object) -> None:
            self._running -= 1

        d = self._resolver(lookup.host)
        d.addCallbacks(lambda addresses: self._found(lookup, addresses), failed)
        d.addBoth(done)


def resolve(host: str) -> Deferred[Sequence[IPAddress]]:
    """The addresses of ``host``, looked up in a thread so the reactor never waits on DNS."""

    def lookup() -> Sequence[IPAddress]:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
        return list(dict.fromkeys(parse_address(str(info[4][0])) for info in infos))

    return deferToThread(lookup)
