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

from twisted.logger import LogLevel, capturedLogs, formatEvent

from applianced import views
from applianced.conf.schema import Config
from applianced.enforcement.base import Element
from applianced.errors import StoreError
from applianced.reconcile import drift
from applianced.rules.decision import Ban, BanKind
from applianced.store.base import BanEvent
from applianced.testing import MemoryEnforcer, MemoryStore
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


# -- a start adopts the kernel's elements the store lacks ---------------------------------------


def _kernel_ban(enforcer: MemoryEnforcer, jail: str, address: str, at: float, ends: float | None
                ) -> Ban:  # fmt: skip
    """A ban only the kernel holds: it reached the enforcer, then the process died."""
    kind = BanKind.AUTO if ends is not None else BanKind.BLACKLIST
    ban = Ban(jail, ip_network(address), at, ends, kind, 1)
    enforcer.bans[(jail, ban.network)] = ban
    return ban


def test_a_start_adopts_kernel_elements_the_store_lacks_and_says_so(tmp_path: Path) -> None:
    """Two bans in the kernel and not in the (new) store, one of them permanent: the start
    keeps both in the kernel, with their own end, records them as recovered, counts and logs
    them; ``why`` names the kernel as their source."""
    enforcer = MemoryEnforcer()
    timed = _kernel_ban(enforcer, "sshd", "203.0.113.7/32", T0 - 50, T0 + 50)
    forever = _kernel_ban(enforcer, "sshd", "198.51.100.0/24", T0 - 50, None)
    with capturedLogs() as events:
        app, clock, _ = start(tmp_path, enforcer=enforcer)
    assert set(enforcer.bans) == {("sshd", timed.network), ("sshd", forever.network)}
    assert enforcer.bans[("sshd", timed.network)].expires_at == T0 + 50
    stored = {b.network: b for b in app.store.active_bans(T0)}
    assert stored[timed.network].started_at == T0 - 50
    assert stored[timed.network].expires_at == T0 + 50
    assert stored[forever.network].permanent
    assert app.health.recovered == 2
    (warning,) = [formatEvent(e) for e in events if e["log_level"] == LogLevel.warn]
    assert "2 bans were in the kernel but not in the offenders store" in warning
    assert "new, was emptied or replaced" in warning
    history = views.why(app, "203.0.113.7")["history"]
    assert history[0]["sender"] == "kernel" and "recovered" in history[0]["lines"][0]
    clock.advance(50)
    assert ("sshd", timed.network) not in enforcer.bans


def test_a_kernel_element_whose_ban_the_store_ended_is_not_adopted(tmp_path: Path) -> None:
    """A crash between the store's end of a ban (unban) and the kernel's removal: the element
    is older than the end, so the start removes it rather than adopt it."""
    app, clock, enforcer = start(tmp_path)
    attack(app, clock, "203.0.113.7")
    (ban,) = enforcer.bans.values()
    clock.advance(5)
    app.store.end_bans([ban], clock.seconds(), "unban")
    app.store.close()
    app2, _, _ = start(tmp_path, clock=clock, enforcer=enforcer)
    assert enforcer.bans == {} and app2.active == {} and app2.health.recovered == 0


def test_a_kernel_element_over_an_ignored_address_is_removed_not_adopted(
    tmp_path: Path,
) -> None:
    """An element the store lacks over the jail's ignoreip (put there by hand, or before the
    address was protected) is removed at start, with a warning, never adopted as a ban."""
    enforcer = MemoryEnforcer()
    _kernel_ban(enforcer, "sshd", "192.0.2.10/32", T0 - 50, T0 + 50)
    kept = _kernel_ban(enforcer, "sshd", "203.0.113.7/32", T0 - 50, T0 + 50)
    conf = config(tmp_path, jail_conf(ignoreip=(ip_network("192.0.2.0/28"),)))
    with capturedLogs() as events:
        app, _, _ = start(tmp_path, conf, enforcer=enforcer)
    assert set(enforcer.bans) == {("sshd", kept.network)}
    assert [b.network for b in app.store.active_bans(T0)] == [kept.network]
    assert app.health.recovered == 1
    warnings = [formatEvent(e) for e in events if e["log_level"] == LogLevel.warn]
    assert any("1 kernel element the store lacks covers addresses" in w for w in warnings)


# -- a store that cannot be written ---------------------------------------------------------------


def test_a_full_store_keeps_bans_enforced_and_writes_them_when_space_returns(
    tmp_path: Path,
) -> None:
    """SQLite's own SQLITE_FULL (max_page_count at the file's size): the bans are enforced,
    their rows wait in memory, counted in status; once the store takes writes again the retry
    writes them, in order (a ban and its unban)."""
    app, clock, enforcer = start(tmp_path)
    conn = app.store._conn  # type: ignore[attr-defined]
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    conn.execute(f"PRAGMA max_page_count = {pages}")
    for i in range(40):
        attack(app, clock, f"203.0.113.{i}")
    views.unban(app, "203.0.113.0")
    assert len(enforcer.bans) == 39
    conn.execute("PRAGMA max_page_count = 1000000")
    clock.advance(60)
    stored = app.store.active_bans(clock.seconds())
    assert len(stored) == 39 and ip_network("203.0.113.0/32") not in {b.network for b in stored}
    health = views.status(app)["health"]
    assert health["store_pending"] == 0 and health["store_errors"] >= 1
    assert health["store_failing"] is False


def test_waiting_rows_are_counted_and_bounded(tmp_path: Path) -> None:
    """While the store refuses writes, status shows the rows waiting and the failure; beyond
    the bound the oldest are dropped and counted."""
    app, clock, enforcer = start(tmp_path)
    app._writes._limit = 5  # type: ignore[attr-defined]
    app.store = store = MemoryStore()
    app._writes._store = store  # type: ignore[attr-defined]
    store.fail = StoreError("disk full")
    for i in range(8):
        attack(app, clock, f"203.0.113.{i}")
    health = views.status(app)["health"]
    assert health["store_failing"] is True and health["store_pending"] == 5
    assert health["store_dropped"] == 3 and len(enforcer.bans) == 8
    store.fail = None
    clock.advance(2)
    assert len(store.active_bans(clock.seconds())) == 5


def test_an_unban_waiting_for_the_store_is_never_dropped_by_the_bound(tmp_path: Path) -> None:
    """Past the bound the oldest waiting rows are dropped: a ban's row is adopted from the
    kernel at the next start, an expiry's end is redone by it, but an unban's end dropped
    would bring the ban back at the next start. The unban waits; bans past it are dropped."""
    app, clock, _ = start(tmp_path)
    app._writes._limit = 5  # type: ignore[attr-defined]
    store = MemoryStore()
    app.store = store
    app._writes._store = store  # type: ignore[attr-defined]
    attack(app, clock, "203.0.113.200")
    assert ip_network("203.0.113.200/32") in {b.network for b in store.active_bans(T0 + 60)}
    store.fail = StoreError("disk full")
    views.unban(app, "203.0.113.200")
    for i in range(8):
        attack(app, clock, f"203.0.113.{i}")
    assert views.status(app)["health"]["store_dropped"] > 0
    store.fail = None
    clock.advance(2)
    active = {b.network for b in store.active_bans(clock.seconds())}
    assert ip_network("203.0.113.200/32") not in active


def test_a_stop_while_the_store_refuses_leaves_no_retry_behind(tmp_path: Path) -> None:
    """The last try at stop fails too: the rows are reported lost (the next start adopts their
    bans), and no retry is scheduled on a stopped appliance's clock."""
    app, clock, _ = start(tmp_path)
    app.store = store = MemoryStore()
    app._writes._store = store  # type: ignore[attr-defined]
    store.fail = StoreError("disk full")
    attack(app, clock, "203.0.113.7")
    attack(app, clock, "203.0.113.8")
    views.unban(app, "203.0.113.8")
    with capturedLogs() as logs:
        app.stop()
    said = [formatEvent(e) for e in logs if "never written" in formatEvent(e)]
    assert said == [
        "3 rows were never written to the offenders store; the next start adopts their bans "
        "from the kernel, and restores 1 bans unbanned or flushed meanwhile: unban them again"
    ]
    assert clock.getDelayedCalls() == []


# -- the periodic reconcile ----------------------------------------------------------------------


def test_a_set_emptied_from_outside_is_repaired_by_the_next_reconcile(tmp_path: Path) -> None:
    """Another tool empties the kernel's sets: within a reconcile interval (60 s by default)
    the bans are back, the repair counted in status and logged once."""
    app, clock, enforcer = start(tmp_path)
    for i in range(3):
        attack(app, clock, f"203.0.113.{i}")
    enforcer.bans.clear()  # `nft flush set inet applianced sshd_v4`
    stranger = _kernel_ban(enforcer, "sshd", "198.51.100.9/32", T0, T0 + 90)
    with capturedLogs() as events:
        clock.advance(59)
        assert len(enforcer.bans) == 1
        clock.advance(1)
    assert set(enforcer.bans) == set(app.active) and len(app.active) == 3
    assert ("sshd", stranger.network) not in enforcer.bans
    health = views.status(app)["health"]
    assert (health["reconcile_repairs"], health["reconcile_missing"]) == (1, 3)
    assert health["reconcile_unknown"] == 1
    (warning,) = [formatEvent(e) for e in events if e["log_level"] == LogLevel.warn]
    assert "3 bans missing, 1 elements no ban accounts for" in warning
    clock.advance(60)  # in step again: no second repair
    assert views.status(app)["health"]["reconcile_repairs"] == 1


def test_reload_repairs_too_and_an_interval_of_0_never_checks(tmp_path: Path) -> None:
    conf = config(tmp_path)
    conf = replace(conf, enforcement=replace(conf.enforcement, reconcile_interval=0.0))
    app, clock, enforcer = start(tmp_path, conf)
    attack(app, clock, "203.0.113.7")
    enforcer.bans.clear()
    clock.advance(90)  # past 60 s: no reconcile ran
    assert enforcer.bans == {}
    app.reload(conf)
    assert set(enforcer.bans) == {("sshd", ip_network("203.0.113.7/32"))}


def test_drift_holds_a_prefix_ban_by_its_pieces_and_leaves_bans_about_to_end() -> None:
    wide = Ban("sshd", ip_network("198.51.100.0/24"), T0, T0 + 100, BanKind.MANUAL, 1)
    ending = Ban("sshd", ip_network("203.0.113.7/32"), T0, T0 + 1, BanKind.AUTO, 1)
    book = {(b.jail, b.network): b for b in (wide, ending)}
    pieces = [Element("sshd", "198.51.100.0/25", T0 + 100, T0)]
    assert drift(book, pieces, T0) == ([], [])
    assert drift(book, [], T0) == ([wide], [])
