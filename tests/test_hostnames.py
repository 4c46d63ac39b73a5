"""Hostname lookups of use_dns jails: found addresses handed on, failures and overflow counted."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Sequence
from ipaddress import ip_address

import pytest
from twisted.internet.defer import Deferred, fail
from twisted.internet.task import Clock
from twisted.logger import capturedLogs, formatEvent

from applianced import hostnames
from applianced.health import Health
from applianced.hostnames import DNS_POOL, FAILED_PER_SECOND, HostLookups, SystemResolver
from applianced.rules.decision import IPAddress, Lookup
from tests.netns import wait_until


def lookup(host: str) -> Lookup:
    return Lookup("sshd", host, f"Failed password for root from {host}", 0.0)


def test_found_addresses_are_handed_on_and_failures_counted() -> None:
    pending: dict[str, Deferred[Sequence[IPAddress]]] = {}
    found: list[tuple[str, list[str]]] = []
    health = Health()
    lookups = HostLookups(
        lambda host: pending.setdefault(host, Deferred()),
        health,
        lambda item, addresses: found.append((item.host, [str(a) for a in addresses])),
        Clock(),
    )
    lookups.lookup(lookup("mx.example.org"))
    lookups.lookup(lookup("gone.example.org"))
    assert found == []
    pending["mx.example.org"].callback([ip_address("192.0.2.5"), ip_address("2001:db8::5")])
    pending["gone.example.org"].errback(OSError("Name or service not known"))
    assert found == [("mx.example.org", ["192.0.2.5", "2001:db8::5"])]
    assert (health.dns_failed, health.dns_dropped) == (1, 0)


def test_lookups_past_the_limit_are_dropped_until_one_ends() -> None:
    pending: list[Deferred[Sequence[IPAddress]]] = []

    def resolver(host: str) -> Deferred[Sequence[IPAddress]]:
        pending.append(Deferred())
        return pending[-1]

    health = Health()
    lookups = HostLookups(resolver, health, lambda item, addresses: None, Clock(), limit=2)
    for i in range(3):
        lookups.lookup(lookup(f"h{i}.example.org"))
    assert (len(pending), health.dns_dropped) == (2, 1)
    pending[0].callback([])
    lookups.lookup(lookup("h3.example.org"))
    assert (len(pending), health.dns_dropped) == (3, 1)


def test_a_usedns_warn_lookup_logs_a_warning() -> None:
    lookups = HostLookups(lambda host: Deferred(), Health(), lambda item, addresses: None, Clock())
    with capturedLogs() as events:
        lookups.lookup(lookup("quiet.example.org"))
        for _ in range(3):  # once per jail and name, not per line
            lookups.lookup(Lookup("sshd", "loud.example.org", "line", 0.0, warn=True))
        lookups.lookup(Lookup("dovecot", "loud.example.org", "line", 0.0, warn=True))
    warned = [e for e in events if "usedns" in str(e.get("log_format", ""))]
    assert [(e["jail"], e["host"]) for e in warned] == [
        ("sshd", "loud.example.org"),
        ("dovecot", "loud.example.org"),
    ]


def test_a_storm_of_names_that_do_not_resolve_logs_within_a_budget() -> None:
    """Failure lines whose names the attacker makes up: each unresolvable name a line would be
    a log flood. FAILED_PER_SECOND lines a second, the rest counted in one summary line."""
    clock = Clock()
    health = Health()
    lookups = HostLookups(
        lambda host: fail(OSError("Name or service not known")),
        health,
        lambda item, addresses: None,
        clock,
    )
    with capturedLogs() as events:
        for i in range(500):
            lookups.lookup(lookup(f"x{i}.invalid"))
        clock.advance(1)
    said = [formatEvent(e) for e in events]
    assert len([line for line in said if line.startswith("cannot resolve")]) == FAILED_PER_SECOND
    assert said[-1] == (
        f"{500 - FAILED_PER_SECOND} more host names could not be resolved in that second "
        "(dns_failed counts them all)"
    )
    assert health.dns_failed == 500


def test_lookups_run_in_a_pool_of_their_own_started_and_stopped_with_the_reactor(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A lookup stuck on a DNS server that never answers must hold none of the reactor's
    threads (the control socket, the decision stream and the reconcile use them): the
    resolver's threads are its own, and the reactor's shutdown stops them."""
    ran_in: list[str] = []

    def getaddrinfo(host: str, *args: object, **kwargs: object) -> list[tuple[object, ...]]:
        ran_in.append(threading.current_thread().name)
        return [(0, 0, 0, "", ("192.0.2.5", 0)), (0, 0, 0, "", ("::ffff:192.0.2.5", 0))]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    reactor = _Reactor()
    resolver = SystemResolver(reactor)
    found: list[Sequence[IPAddress]] = []
    try:
        resolver("mx.example.org").addCallback(found.append)
        wait_until(lambda: bool(reactor.from_threads), 10, "the lookup's result from its thread")
    finally:
        reactor.shutdown()  # the pool's threads joined, whatever happened
    for call in reactor.from_threads:
        call()
    assert found == [[ip_address("192.0.2.5")]]
    assert len(ran_in) == 1 and DNS_POOL in ran_in[0]
    assert not any(DNS_POOL in t.name for t in threading.enumerate())


class _Reactor:
    """What SystemResolver asks of the reactor: running at once, the shutdown's triggers kept,
    calls from threads queued for the test to run."""

    def __init__(self) -> None:
        self.from_threads: list[Callable[[], object]] = []
        self._shutdown: list[Callable[[], object]] = []

    def callWhenRunning(self, f: Callable[[], object]) -> None:
        f()

    def addSystemEventTrigger(self, phase: str, event: str, f: Callable[[], object]) -> None:
        assert (phase, event) == ("during", "shutdown")
        self._shutdown.append(f)

    def callFromThread(self, f: Callable[..., object], *args: object) -> None:
        self.from_threads.append(lambda: f(*args))

    def shutdown(self) -> None:
        for f in self._shutdown:
            f()


def test_a_name_fails_at_most_max_addresses_of_its_addresses(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A name's records are its owner's to choose: a hundred of them count a failure against
    the first MAX_ADDRESSES only."""
    records = [
        (socket.AF_INET, socket.SOCK_STREAM, 6, "", (f"198.51.100.{i}", 0)) for i in range(100)
    ]
    monkeypatch.setattr(socket, "getaddrinfo", lambda *args, **kwargs: records)
    found = hostnames._addresses("many.example")
    assert len(found) == hostnames.MAX_ADDRESSES
    assert str(found[0]) == "198.51.100.0"
