"""The prefix sets' pure bookkeeping: disjoint pieces for nested bans (enforcement/prefixset.py)."""

from __future__ import annotations

import math
from ipaddress import ip_network

from applianced.enforcement.prefixset import (
    EXPIRY_GRACE,
    Net,
    PrefixSet,
    disjoint_pieces,
    net_of,
    span,
)


def _n(text: str) -> Net:
    return net_of(ip_network(text))


def test_pieces_of_nested_bans_take_the_latest_expiry() -> None:
    """Pieces are disjoint, cover every banned address, and carry the latest expiry there."""
    (lo, hi), (nlo, nhi) = span(_n("10.0.0.0/24"), 32), span(_n("10.0.0.64/26"), 32)
    assert disjoint_pieces([(lo, hi, 100.0), (nlo, nhi, 500.0)]) == [
        (lo, nlo - 1, 100.0),
        (nlo, nhi, 500.0),
        (nhi + 1, hi, 100.0),
    ]
    assert disjoint_pieces([(lo, hi, 900.0), (nlo, nhi, 500.0)]) == [(lo, hi, 900.0)]
    assert disjoint_pieces([(lo, hi, math.inf), (nlo, nhi, 500.0)]) == [(lo, hi, math.inf)]


def test_prefix_set_plans_only_the_changed_pieces() -> None:
    """Plans touch only the changed cluster and keep its unchanged pieces."""
    ps = PrefixSet.build(32, {_n("10.0.0.0/24"): 100.0, _n("10.1.0.0/24"): 100.0})
    plan = ps.plan(set(), {_n("10.2.0.0/24"): 100.0})
    assert plan.delete == [] and len(plan.add) == 1
    ps.commit(plan)
    base = _n("10.0.0.0/16")[0]
    plan = ps.plan(set(), {_n("10.0.0.0/16"): 50.0})  # shorter: the /24 piece stays as it is
    assert plan.delete == [] and plan.add == [(base + 256, base + 65535, 50.0)]
    ps.commit(plan)
    assert set(ps.members) == {_n("10.0.0.0/16"), _n("10.1.0.0/24"), _n("10.2.0.0/24")}
    plan = ps.plan(set(), {_n("10.0.0.0/16"): 500.0})  # longer: one piece covers it all
    assert plan.delete == [(base, base + 255, 100.0), (base + 256, base + 65535, 50.0)]
    assert plan.add == [(base, base + 65535, 500.0)]
    assert len(ps.pieces_after(plan)) == 3
    ps.commit(plan)
    ps.commit(ps.plan({_n("10.0.0.0/16")}, {}))
    assert set(ps.bans) == {_n("10.0.0.0/24"), _n("10.1.0.0/24"), _n("10.2.0.0/24")}
    assert (base, base + 255, 100.0) in ps.all_pieces() and len(ps.all_pieces()) == 3


def test_prefix_set_finds_wider_and_narrower_overlaps_in_ipv6() -> None:
    """A /48 over two held /64s joins them in one cluster; lifting the /48 splits it again."""
    ps = PrefixSet.build(128, {_n("2001:db8:0:1::/64"): 100.0, _n("2001:db8:0:2::/64"): 100.0})
    plan = ps.plan(set(), {_n("2001:db8::/48"): 200.0})
    ps.commit(plan)
    assert list(ps.members) == [_n("2001:db8::/48")]
    assert len(ps.all_pieces()) == 1
    ps.commit(ps.plan({_n("2001:db8::/48")}, {}))
    assert set(ps.members) == {_n("2001:db8:0:1::/64"), _n("2001:db8:0:2::/64")}


def test_prefix_set_forgets_clusters_the_kernel_expired() -> None:
    """Bookkeeping stays bounded: clusters expired beyond the grace period are dropped."""
    ps = PrefixSet.build(32, {_n("10.0.0.0/24"): 100.0, _n("10.1.0.0/24"): math.inf})
    ps.prune(100.0 + EXPIRY_GRACE - 1)
    assert len(ps.bans) == 2
    ps.prune(100.0 + EXPIRY_GRACE + 1)
    assert set(ps.bans) == {_n("10.1.0.0/24")}
