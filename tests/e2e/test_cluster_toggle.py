"""Cluster mode end to end, issue 20: a jail enabled by reload on one appliance enforces the
cluster's active bans for it there. The two daemons and the PostgreSQL server are those of
``test_cluster.py``'s fixture (a pair of this module's own)."""

from __future__ import annotations

import pytest

from tests.e2e.daemon import wait_for
from tests.e2e.test_cluster import Cluster, cluster, wait_kernel
from tests.netns import netns_missing, ns_exec
from tests.pg import pg_missing

pytestmark = pytest.mark.skipif(
    bool(netns_missing() or pg_missing()), reason=str(netns_missing() or pg_missing())
)

__all__ = ["cluster"]  # the fixture, used by name


def test_a_jail_enabled_by_reload_enforces_the_clusters_bans_for_it(cluster: Cluster) -> None:
    """postfix-sasl disabled on beta: alpha's ban reaches beta's store, not its kernel (the
    jail's sets are gone); `jail enable postfix-sasl` on beta puts it in beta's kernel and
    `banned` with alpha's expiry."""
    a, b = cluster.a, cluster.b
    config = str(b.daemon.config)

    def edit(action: str) -> None:
        rc, _, err = b.daemon.ctl_rc("jail", action, "postfix-sasl", "--config", config)
        assert rc == 0, err

    address = "203.0.113.77"
    edit("disable")
    try:
        a.fail(address)
        wait_kernel(a, address, timeout=10)
        wait_for(
            "the ban in beta's store",
            lambda: b.ctl("why", address)["history"] or None,  # type: ignore[index]
        )
        assert (
            ns_exec(b.ns, "nft", "list", "table", "inet", "applianced").stdout.count(
                "postfix_sasl_v4"
            )
            == 0
        )
    finally:
        edit("enable")
    wait_kernel(b, address, timeout=5)
    expiry_a, expiry_b = a.kernel()[address], b.kernel()[address]
    assert expiry_a is not None and expiry_b is not None
    assert expiry_b == pytest.approx(expiry_a, abs=2), "beta must keep alpha's expiry"
    assert f"{address}/32" in {x["address"] for x in b.ctl("banned")}  # type: ignore[attr-defined]
