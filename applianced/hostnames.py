"""Hostname lookups for jails whose ``usedns`` is "yes" or "warn" (the latter logs each): a
``<HOST>`` that was a name, resolved off the reactor thread, at most ``MAX_LOOKUPS`` at once
(more are dropped and counted). A name that does not resolve is logged, ``FAILED_PER_SECOND``
a second (the names are the log lines', an attacker's to make up), the rest counted.

The Appliance keeps a ``HostLookups`` when it was given a resolver and hands it each
``Lookup`` the engine returns; ``found`` counts the failure for every address. ``service.py``
passes a ``SystemResolver``, which asks the system's resolver in threads of its own: a lookup
stuck on a DNS server that never answers (an attacker's, for a name of its choosing) holds
none of the reactor's threads, which the control socket, the decision stream and the
reconcile use.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Sequence
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

from applianced.health import Health
from applianced.logs import LogBudget
from applianced.rules.addresses import parse_address
from applianced.rules.decision import IPAddress, Lookup

__all__ = [
    "DNS_POOL",
    "DNS_THREADS",
    "FAILED_PER_SECOND",
    "MAX_ADDRESSES",
    "MAX_LOOKUPS",
    "HostLookups",
    "Resolver",
    "SystemResolver",
]

log = Logger()

MAX_LOOKUPS = 64  # hostname lookups in flight at once; more are dropped
MAX_ADDRESSES = 16  # addresses of one name that a failure counts against
DNS_THREADS = 16  # threads of the lookups' own pool; the rest of the 64 wait for one
DNS_POOL = "applianced-dns"  # the pool's name, its threads' prefix
FAILED_PER_SECOND = 10  # "cannot resolve" lines a second; the rest are counted in one line
MAX_WARNED = 1024  # (jail, name) pairs warned of once each (usedns = warn); then forgotten

Resolver = Callable[[str], "Deferred[Sequence[IPAddress]]"]


class HostLookups:
    """Resolves each ``Lookup`` with ``resolver`` and hands its addresses to ``found``."""

    def __init__(
        self,
        resolver: Resolver,
        health: Health,
        found: Callable[[Lookup, Sequence[IPAddress]], None],
        clock: IReactorTime,
        limit: int = MAX_LOOKUPS,
    ) -> None:
        self._resolver = resolver
        self._failed_lines = LogBudget(clock, FAILED_PER_SECOND, _log_unresolved)
        self._clock = clock
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
            if not self._failed_lines.allow(1, self._clock.seconds()):
                return
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

    def close(self) -> None:
        """Summarise the failures still counted (the daemon stops)."""
        self._failed_lines.close()


def _log_unresolved(count: int) -> None:
    log.info(
        "{count} more host names could not be resolved in that second (dns_failed counts them all)",
        count=count,
    )


class SystemResolver:
    """The system resolver in a thread pool of its own (``DNS_THREADS``), started when the
    reactor runs and stopped at its shutdown; a ``Resolver``."""

    def __init__(self, reactor: Any) -> None:
        self._reactor = reactor
        self._pool = ThreadPool(0, DNS_THREADS, DNS_POOL)
        reactor.callWhenRunning(self._pool.start)
        reactor.addSystemEventTrigger("during", "shutdown", self._pool.stop)

    def __call__(self, host: str) -> Deferred[Sequence[IPAddress]]:
        """The addresses of ``host``; the reactor never waits on DNS."""
        return deferToThreadPool(self._reactor, self._pool, _addresses, host)


def _addresses(host: str) -> Sequence[IPAddress]:
    """The name's addresses, the first ``MAX_ADDRESSES`` (the name and its records are the
    log line's author's to choose: one line may not fail a whole network's worth)."""
    infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    found = dict.fromkeys(parse_address(str(info[4][0])) for info in infos)
    return list(found)[:MAX_ADDRESSES]
