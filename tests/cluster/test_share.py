"""``share_failures`` on the reactor side, driven with a task.Clock, real SQLite stores and
the in-memory enforcer: the failures a jail counts are queued for the cluster, another
appliance counts them in its own window (by its own clock) and bans; a remote failure is never
queued again, ignored addresses are not shared, and the queue drops (and counts) what it cannot
send."""

from __future__ import annotations

from ipaddress import ip_address, ip_network
from pathlib import Path

from twisted.internet.task import Clock

from applianced import views
from applianced.appliance import Appliance
from applianced.cluster import replicator as replicator_module
from applianced.cluster.replicator import Replicator
from applianced.rules.engine import Engine
from applianced.store.sqlite import SqliteOffenderStore
from applianced.testing import MemoryEnforcer
from tests.helpers import config, jail_conf, message, ssh_failure

T0 = 1_800_000_000.0
ATTACKER = "198.51.100.7"


def node(tmp_path: Path, name: str, clock: Clock) -> tuple[Appliance, Replicator, MemoryEnforcer]:
    """One appliance wired as service.py wires it with share_failures on, without threads
    or a database (the test carries the failures from one queue to the other)."""
    enforcer = MemoryEnforcer()
    store = SqliteOffenderStore(tmp_path / f"{name}.sqlite", node=name, journal=True)
    conf = config(tmp_path, jail_conf(ignoreip=(ip_network("192.0.2.0/24"),)))
    replicator = Replicator(
        store,
        lambda bans, ended: app.adopt(bans, ended),
        {"conninfo": ""},
        clock,
        counted=lambda failures: app.remote_failures(failures),
    )
    replicator.running = True
    engine = Engine(on_failure=replicator.share)
    app = Appliance(conf, store, enforcer, clock, engine=engine, cluster=replicator.status)
    app.start()
    return app, replicator, enforcer


def fail(app: Appliance, clock: Clock, address: str = ATTACKER) -> None:
    app.receive(message(ssh_failure(address), at=clock.seconds()))


def test_remote_failures_fill_the_window_and_are_not_shared_again(tmp_path: Path) -> None:
    clock = Clock()
    clock.advance(T0)
    a, rep_a, _ = node(tmp_path, "alpha", clock)
    b, rep_b, enforcer_b = node(tmp_path, "beta", clock)
    fail(a, clock)
    fail(a, clock)
    fail(a, clock, "192.0.2.5")  # ignored: counted nowhere, shared with no one
    sent, rep_a._failures = rep_a._failures, []
    assert [(f.jail, str(f.address), f.at, f.sender) for f in sent] == [
        ("sshd", ATTACKER, T0, "127.0.0.1")
    ] * 2
    clock.advance(5)
    rep_b._counted(sent)
    jail_b = b.engine.jails["sshd"]
    assert jail_b.failures(ip_address(ATTACKER), clock.seconds()) == 2
    assert rep_b._failures == []  # no echo
    clock.advance(56)  # B's window holds them by B's clock of receipt: T0 + 5 + 60 > now
    fail(b, clock)
    clock.advance(0)
    (ban,) = b.banned()
    assert (ban.network, ban.count) == (ip_network(f"{ATTACKER}/32"), 1)
    assert ("sshd", ban.network) in enforcer_b.bans
    assert len(rep_b._failures) == 1  # B's own failure is shared
    (pushed,) = b.store.pending(10)  # type: ignore[attr-defined]
    assert (pushed.op, pushed.node) == ("ban", "beta")  # an ordinary local ban, pushed as ever
    assert views.status(b)["cluster"]["failures"] == {"shared": 0, "received": 2, "dropped": 0}
    assert a.banned() == []


def test_failures_are_dropped_and_counted_when_the_database_is_down_or_the_queue_full(
    tmp_path: Path,
) -> None:
    clock = Clock()
    clock.advance(T0)
    a, rep_a, _ = node(tmp_path, "alpha", clock)
    fail(a, clock)
    rep_a._tick()  # not connected: dropped, not kept for later
    assert rep_a._failures == [] and rep_a.state.failures_dropped == 1
    rep_a.state.connected = True
    rep_a._pushing = True  # a push in flight: the queue waits for the next tick
    for _ in range(replicator_module._FAILURES_MAX + 3):
        fail(a, clock, "203.0.113.9")
    assert len(rep_a._failures) == replicator_module._FAILURES_MAX
    assert views.status(a)["cluster"]["failures"]["dropped"] == 4
