"""The Enforcer contract, checked against MemoryEnforcer (the reference) and, by subclassing
``EnforcerContract`` in test_nftables.py, against the nftables backend in a namespace.

A subclass provides the ``enforcer`` fixture: a fresh backend, not set up yet. The contract is
observed through the interface alone (``counts``), so it holds for any backend.
"""

from __future__ import annotations

import time
from ipaddress import ip_network
from typing import Any

import pytest

from applianced.enforcement.base import Enforcer, JailRules
from applianced.enforcement.memory import MemoryEnforcer
from applianced.rules.decision import Ban, BanKind

SMTP = JailRules("postfix-sasl", ("25", "465", "587"), "tcp")
DOVECOT = JailRules("dovecot", ("110", "143", "993", "995"), "tcp")
RECIDIVE = JailRules("recidive", ("all",), "both")
JAILS = (SMTP, DOVECOT, RECIDIVE)


def ban(jail: str, network: str, now: float, duration: float | None = 3600.0) -> Ban:
    """A ban of ``network`` starting at ``now`` for ``duration`` seconds (None: permanent)."""
    expires = None if duration is None else now + duration
    kind = BanKind.BLACKLIST if duration is None else BanKind.AUTO
    return Ban(jail, ip_network(network), now, expires, kind, 1)


class EnforcerContract:
    """Behaviour every Enforcer shows. Not collected itself (no Test prefix)."""

    @pytest.fixture
    def now(self) -> float:
        return time.time()

    def test_counts_start_at_zero_for_every_jail(self, enforcer: Any) -> None:
        """After setup every jail is counted, with nothing banned."""
        enforcer.setup(JAILS)
        assert dict(enforcer.counts()) == {"postfix-sasl": 0, "dovecot": 0, "recidive": 0}

    def test_bans_are_counted_per_jail(self, enforcer: Any, now: float) -> None:
        """IPv4 hosts, IPv6 prefixes and permanent bans are each held once, in their jail."""
        enforcer.setup(JAILS)
        enforcer.apply(
            [
                ban("postfix-sasl", "192.0.2.2/32", now),
                ban("postfix-sasl", "2001:db8:1::/64", now),
                ban("postfix-sasl", "198.51.100.7/32", now, None),
                ban("dovecot", "203.0.113.0/24", now),
                ban("recidive", "2001:db8:2::5/128", now, None),
            ],
            [],
            now,
        )
        assert dict(enforcer.counts()) == {"postfix-sasl": 3, "dovecot": 1, "recidive": 1}

    def test_bans_of_jails_not_set_up_are_ignored(self, enforcer: Any, now: float) -> None:
        """A ban for an unknown jail changes nothing and does not fail the batch."""
        enforcer.setup([SMTP])
        enforcer.apply(
            [ban("nosuch", "192.0.2.2/32", now), ban("postfix-sasl", "192.0.2.3/32", now)],
            [ban("nosuch", "192.0.2.4/32", now)],
            now,
        )
        assert dict(enforcer.counts()) == {"postfix-sasl": 1}

    def test_unban_removes_only_that_ban(self, enforcer: Any, now: float) -> None:
        """Unbanning one network of a jail leaves its other bans and other jails' bans."""
        enforcer.setup(JAILS)
        a, b = ban("postfix-sasl", "192.0.2.2/32", now), ban("postfix-sasl", "192.0.2.3/32", now)
        c = ban("dovecot", "192.0.2.2/32", now)
        enforcer.apply([a, b, c], [], now)
        enforcer.apply([], [a], now)
        assert dict(enforcer.counts()) == {"postfix-sasl": 1, "dovecot": 1, "recidive": 0}

    def test_unbanning_what_is_not_held_does_not_fail_the_batch(
        self, enforcer: Any, now: float
    ) -> None:
        """Unbans of networks never banned are no-ops; the bans of the same batch still apply."""
        enforcer.setup(JAILS)
        missing = [
            ban("postfix-sasl", "192.0.2.9/32", now),
            ban("dovecot", "2001:db8::/64", now),
            ban("recidive", "198.51.100.0/24", now, None),
        ]
        enforcer.apply([ban("postfix-sasl", "192.0.2.2/32", now)], missing, now)
        assert dict(enforcer.counts()) == {"postfix-sasl": 1, "dovecot": 0, "recidive": 0}

    def test_banning_a_held_network_again_holds_it_once(self, enforcer: Any, now: float) -> None:
        """A second ban of a network (longer, or now permanent) replaces the first."""
        enforcer.setup(JAILS)
        enforcer.apply([ban("postfix-sasl", "192.0.2.2/32", now, 60)], [], now)
        enforcer.apply([ban("postfix-sasl", "192.0.2.2/32", now, 600)], [], now)
        assert enforcer.counts()["postfix-sasl"] == 1
        enforcer.apply([ban("postfix-sasl", "192.0.2.2/32", now, None)], [], now)
        assert enforcer.counts()["postfix-sasl"] == 1

    def test_a_batch_that_unbans_and_bans_a_network_leaves_it_banned(
        self, enforcer: Any, now: float
    ) -> None:
        """Unbans apply before bans within a batch, so a replaced ban stays in force."""
        enforcer.setup(JAILS)
        old = ban("postfix-sasl", "2001:db8:5::/64", now, 60)
        enforcer.apply([old], [], now)
        enforcer.apply([ban("postfix-sasl", "2001:db8:5::/64", now, None)], [old], now)
        assert enforcer.counts()["postfix-sasl"] == 1

    def test_restore_holds_exactly_the_active_bans(self, enforcer: Any, now: float) -> None:
        """restore drops what the store does not know and adds what is missing."""
        enforcer.setup(JAILS)
        keep = ban("postfix-sasl", "192.0.2.2/32", now)
        enforcer.apply(
            [keep, ban("postfix-sasl", "192.0.2.3/32", now), ban("dovecot", "2001:db8::/64", now)],
            [],
            now,
        )
        active = [
            keep,
            ban("recidive", "198.51.100.0/24", now, None),
            ban("dovecot", "192.0.2.7/32", now),
            ban("nosuch", "192.0.2.8/32", now),
        ]
        enforcer.restore(active, now)
        assert dict(enforcer.counts()) == {"postfix-sasl": 1, "dovecot": 1, "recidive": 1}

    def test_setup_again_keeps_the_bans_of_kept_jails(self, enforcer: Any, now: float) -> None:
        """A reload that changes a jail's ports, protocol or hook keeps its bans."""
        enforcer.setup(JAILS)
        enforcer.apply(
            [
                ban("postfix-sasl", "192.0.2.2/32", now),
                ban("postfix-sasl", "2001:db8::/64", now, None),
            ],
            [],
            now,
        )
        changed = JailRules(
            "postfix-sasl", ("25", "2525"), "both", hook="forward", verdict="reject"
        )
        enforcer.setup([changed, DOVECOT])
        assert dict(enforcer.counts()) == {"postfix-sasl": 2, "dovecot": 0}

    def test_setup_without_a_jail_drops_its_bans(self, enforcer: Any, now: float) -> None:
        """A jail no longer listed loses its bans; listed again later, it starts empty."""
        enforcer.setup(JAILS)
        enforcer.apply(
            [ban("dovecot", "192.0.2.2/32", now), ban("postfix-sasl", "192.0.2.2/32", now)], [], now
        )
        enforcer.setup([SMTP])
        assert dict(enforcer.counts()) == {"postfix-sasl": 1}
        enforcer.setup([SMTP, DOVECOT])
        assert dict(enforcer.counts()) == {"postfix-sasl": 1, "dovecot": 0}

    def test_flush_removes_every_ban_and_keeps_the_jails(self, enforcer: Any, now: float) -> None:
        """After flush every jail is still counted, at zero; bans can be applied again."""
        enforcer.setup(JAILS)
        enforcer.apply(
            [ban("postfix-sasl", "192.0.2.2/32", now), ban("recidive", "2001:db8::/48", now, None)],
            [],
            now,
        )
        enforcer.flush()
        assert dict(enforcer.counts()) == {"postfix-sasl": 0, "dovecot": 0, "recidive": 0}
        enforcer.apply([ban("recidive", "2001:db8::/48", now, None)], [], now)
        assert enforcer.counts()["recidive"] == 1

    def test_close_leaves_the_bans_in_force(self, enforcer: Any, now: float) -> None:
        """close releases resources only; what was banned stays banned."""
        enforcer.setup(JAILS)
        enforcer.apply([ban("postfix-sasl", "192.0.2.2/32", now)], [], now)
        enforcer.close()
        assert enforcer.counts()["postfix-sasl"] == 1


class TestMemoryEnforcer(EnforcerContract):
    @pytest.fixture
    def enforcer(self) -> MemoryEnforcer:
        return MemoryEnforcer()

    def test_is_an_enforcer(self) -> None:
        """MemoryEnforcer satisfies the Enforcer protocol and names itself."""
        e = MemoryEnforcer()
        assert isinstance(e, Enforcer)
        assert e.name == "memory"

    def test_each_apply_is_one_transaction(self, now: float) -> None:
        """One apply call counts as one transaction, however many bans it carries."""
        e = MemoryEnforcer()
        e.setup(JAILS)
        e.apply([ban("postfix-sasl", f"192.0.2.{i}/32", now) for i in range(1, 11)], [], now)
        assert e.transactions == 1
