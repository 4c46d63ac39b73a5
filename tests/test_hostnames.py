"""Hostname lookups of use_dns jails: found addresses handed on, failures and overflow counted."""

from __future__ import annotations

from collections.abc import Sequence
from ipaddress import ip_address

from twisted.internet.defer import Deferred
from twisted.logger import capturedLogs

from applianced.health import Health
from applianced.hostnames import HostLookups
from applianced.rules.decision import IPAddress, Lookup


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
    lookups = HostLookups(resolver, health, lambda item, addresses: None, limit=2)
    for i in range(3):
        lookups.lookup(lookup(f"h{i}.example.org"))
    assert (len(pending), health.dns_dropped) == (2, 1)
    pending[0].callback([])
    lookups.lookup(lookup("h3.example.org"))
    assert (len(pending), health.dns_dropped) == (3, 1)


def test_a_usedns_warn_lookup_logs_a_warning() -> None:
    lookups = HostLookups(lambda host: Deferred(), Health(), lambda item, addresses: None)
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
