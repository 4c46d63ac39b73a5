"""The store and the kernel never drift apart (issue 20): a jail enabled again by reload
enforces the store's active bans for it, a start adopts what the kernel holds and the store
lacks, a store that cannot be written keeps its rows pending, a periodic reconcile repairs sets
changed from outside.

Driven with a task.Clock, a real SQLite store in tmp_path and the in-memory enforcer.
"""

from __future__ import annotations

from dataclasses import replace
from ipaddress import ip_network
from pathlib import Path

from applianced import views
from applianced.conf.schema import Config
from applianced.rules.decision import Ban, BanKind
from applianced.store.base import BanEvent
from tests.helpers import config, jail_conf
from tests.test_appliance import T0, attack, start

DOVECOT = jail_conf("dovecot", programs=("sshd",))


def _two_jails(tmp_path: Path) -> Config:
    return config(tmp_path, jail_conf(), DOVECOT)


def test_a_jail_disabled_then_enabled_by_reload_enforces_its_active_bans_again(
    tmp_path: Path,
) -> None:
    """dovecot's bans leave the kernel while it is disabled and come back, with their own
    expiry, in the kernel, the book and every view once it is enabled again."""
    conf = _two_jails(tmp_path)
    app, clock, enforcer = start(tmp_path, conf)
    attack(app, clock, "203.0.113.7")
    key = ("dovecot", ip_network("203.0.113.7/32"))
    ban = enforcer.bans[key]
    app.reload(replace(conf, jails=(jail_conf(),)))
    assert key not in enforcer.bans
    clock.advance(10)
    app.reload(conf)
    assert enforcer.bans[key] == ban
    assert app.active[key] == ban
    assert app.banned("dovecot") == [ban]
    assert views.status(app)["jails"]["dovecot"]["banned"] == 1
    assert views.why(app, "203.0.113.7")["jails"]["dovecot"]["active_ban"] is not None
    clock.advance(100)  # it still ends at its own expiry
    assert key not in enforcer.bans and key not in app.active


def test_a_jail_enabled_by_reload_enforces_the_clusters_bans_it_holds(tmp_path: Path) -> None:
    """Cluster mode: a ban adopted from another node for a jail disabled here is in the local
    replica; enabling the jail by reload enforces it."""
    conf = _two_jails(tmp_path)
    app, clock, enforcer = start(tmp_path, replace(conf, jails=(jail_conf(),)))
    remote = Ban("dovecot", ip_network("198.51.100.4/32"), T0 - 5, T0 + 500, BanKind.AUTO, 1)
    event = BanEvent(1, "ban", "other.1", "other", "mx", remote, ("[mx] failed",))
    started, _ = app.store.adopt([event], 1, clock.seconds())  # type: ignore[attr-defined]
    app.adopt(started, [])
    assert ("dovecot", remote.network) not in enforcer.bans
    app.reload(conf)
    assert enforcer.bans[("dovecot", remote.network)] == remote
