"""What a start restores: expired bans ended in the store, the rest bounded for the kernel."""

from __future__ import annotations

import gc
from ipaddress import ip_network

from applianced.restore import gc_paused, restorable
from applianced.rules.decision import BanDecision, BanKind
from applianced.testing import MemoryStore
from applianced.units import MAX_BAN_SECONDS

T0 = 1_800_000_000.0


def test_restorable_ends_the_expired_and_bounds_the_rest_of_enabled_jails() -> None:
    store = MemoryStore()
    store.record_bans(
        [
            BanDecision("sshd", ip_network("192.0.2.1/32"), 10.0, BanKind.AUTO, 1, T0),
            BanDecision("sshd", ip_network("192.0.2.2/32"), 1e12, BanKind.MANUAL, 1, T0),
            BanDecision("sshd", ip_network("192.0.2.3/32"), None, BanKind.BLACKLIST, 1, T0),
            BanDecision("gone", ip_network("192.0.2.4/32"), 100.0, BanKind.AUTO, 1, T0),
        ]
    )
    now = T0 + 20
    rows = restorable(store, {"sshd"}, now, lambda bans, at, why: store.end_bans(bans, at, why))
    assert [(net, ends) for _, net, _, ends, _, _ in rows] == [
        ("192.0.2.2/32", now + MAX_BAN_SECONDS),
        ("192.0.2.3/32", None),
    ]
    [expired] = [r for r in store.records if r.end_reason == "expired"]
    assert str(expired.ban.network) == "192.0.2.1/32" and expired.ended_at == now
    assert store.due_expiries(now) == []  # the jail that is gone keeps its ban in the store
    assert len(store.active_bans(now)) == 3


def test_gc_paused_restores_the_collector_as_it_was() -> None:
    assert gc.isenabled()
    with gc_paused():
        assert not gc.isenabled()
    assert gc.isenabled()
