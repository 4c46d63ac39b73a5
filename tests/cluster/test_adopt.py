"""Appliance.adopt and the replicator's reactor side, driven with a task.Clock, a real SQLite
store and the in-memory enforcer: other appliances' bans start here with their own expiry,
their unbans lift ours, replays change nothing, a database failure is reported and retried
with a backoff."""

from __future__ import annotations

from ipaddress import ip_network
from pathlib import Path
from typing import Any

from prometheus_client import generate_latest
from twisted.internet.task import Clock
from twisted.python.failure import Failure

from applianced import views
from applianced.appliance import Appliance
from applianced.cluster.replicator import Replicator
from applianced.metrics import make_registry
from applianced.rules.decision import Ban, BanKind
from applianced.store.base import BanEvent
from applianced.store.sqlite import SqliteOffenderStore
from applianced.testing import MemoryEnforcer
from tests.helpers import config, message, ssh_failure

T0 = 1_800_000_000.0
NET = ip_network("198.51.100.7/32")


def setup(tmp_path: Path) -> tuple[Appliance, Replicator, Clock, MemoryEnforcer]:
    clock = Clock()
    clock.advance(T0)
    enforcer = MemoryEnforcer()
    store = SqliteOffenderStore(tmp_path / "o.sqlite", node="alpha", journal=True)
    replicator = Replicator(store, lambda bans, ended: app.adopt(bans, ended), {"conninfo": ""},
                            clock)  # fmt: skip
    replicator.running = True  # the reactor side only: no threads, no database
    app = Appliance(config(tmp_path), store, enforcer, clock, cluster=replicator.status)
    app.start()
    return app, replicator, clock, enforcer


def remote(seq: int, uid: str, op: str = "ban", at: float = T0) -> BanEvent:
    ban = Ban("sshd", NET, at, at + 300.0, BanKind.AUTO, 1)
    end: tuple[Any, Any] = (at + 5, "unban") if op == "end" else (None, None)
    return BanEvent(seq, op, uid, "beta", "192.0.2.99", ban, ("[192.0.2.99] x",), *end)  # type: ignore[arg-type]


def test_a_remote_ban_is_enforced_with_its_expiry_and_then_lifted(tmp_path: Path) -> None:
    app, replicator, _, enforcer = setup(tmp_path)
    replicator._received([remote(1, "u1")], 1)
    assert enforcer.bans[("sshd", NET)].expires_at == T0 + 300.0
    replicator._received([remote(1, "u1")], 1)  # a replay
    assert replicator.state.adopted == 1 and app.store.cursor() == 1  # type: ignore[attr-defined]
    replicator._received([remote(2, "u1", "end")], 2)
    assert ("sshd", NET) not in enforcer.bans and app.banned() == []
    assert views.status(app)["cluster"]["adopted"] == 2


def test_a_remote_ban_expires_here_and_counts_for_the_next_offence(tmp_path: Path) -> None:
    app, replicator, clock, enforcer = setup(tmp_path)
    replicator._received([remote(1, "u1")], 1)
    clock.advance(300)
    assert ("sshd", NET) not in enforcer.bans
    for _ in range(3):
        app.receive(message(ssh_failure("198.51.100.7"), at=clock.seconds()))
    clock.advance(0)
    (ban,) = app.banned()
    assert ban.count == 2  # the other appliance's ban was the first
    (mine,) = app.store.pending(10)  # type: ignore[attr-defined]
    assert (mine.op, mine.node, mine.ban) == ("ban", "alpha", ban)


def test_a_database_failure_is_shown_and_retried_later(tmp_path: Path) -> None:
    app, replicator, _, _ = setup(tmp_path)
    replicator._push_failed(Failure(OSError("connection refused")))
    status = views.status(app)["cluster"]
    assert (status["connected"], status["last_error"]) == (False, "connection refused")
    replicator._push_failed(Failure(OSError("connection refused")))
    assert replicator._push_after == T0 + 0.5  # 0.25 then 0.5: doubling
    replicator._up()
    assert views.status(app)["cluster"]["connected"] and replicator._push_after == 0.0


def test_the_metrics_show_the_cluster(tmp_path: Path) -> None:
    app, replicator, _, _ = setup(tmp_path)
    replicator._push_failed(Failure(OSError("connection refused")))
    text = generate_latest(make_registry(app, process=False)).decode()
    assert "applianced_cluster_connected 0.0" in text
    assert "applianced_cluster_backlog 0.0" in text


def test_the_heartbeats_age_grows_and_a_stale_one_is_down(tmp_path: Path) -> None:
    """A silent path: no error comes, the heartbeat just stops. Its age (and every node's) grows
    by the local clock; past ``stale`` the database is shown down, and a heartbeat that goes
    through again shows it up."""
    app, replicator, clock, _ = setup(tmp_path)
    replicator._up()
    replicator._nodes([{"name": "alpha", "age": 0.5, "backlog": 0, "version": "1"}])
    clock.advance(replicator.stale)
    replicator._tick()
    status = views.status(app)["cluster"]
    assert status["connected"] and status["heartbeat_age"] == replicator.stale
    assert status["nodes"][0]["age"] == replicator.stale + 0.5
    clock.advance(1)
    replicator._tick()
    status = views.status(app)["cluster"]
    assert not status["connected"] and "no heartbeat for 9 s" in status["last_error"]
    text = generate_latest(make_registry(app, process=False)).decode()
    assert "applianced_cluster_heartbeat_age_seconds 9.0" in text
    replicator._nodes([{"name": "alpha", "age": 0.0, "backlog": 0, "version": "1"}])
    assert views.status(app)["cluster"]["connected"]
    clock.advance(60)  # a long outage, then a new connection before its first heartbeat
    replicator._down("gone")
    replicator._up()
    replicator._tick()
    assert views.status(app)["cluster"]["connected"]


def test_a_multi_line_driver_error_is_one_line(tmp_path: Path) -> None:
    app, replicator, _, _ = setup(tmp_path)
    replicator._down(
        "connection failed: server closed the connection unexpectedly\n"
        "\tThis probably means the server terminated abnormally\n"
    )
    assert views.status(app)["cluster"]["last_error"] == (
        "connection failed: server closed the connection unexpectedly This probably means the"
        " server terminated abnormally"
    )


def test_the_backlog_grows_in_status_while_the_database_is_down(tmp_path: Path) -> None:
    """Pushes back off while it is down; the backlog status shows is counted all the same."""
    app, replicator, clock, _ = setup(tmp_path)
    for _ in range(5):
        replicator._push_failed(Failure(OSError("connection refused")))
    replicator._tick()
    views.ban(app, "sshd", "203.0.113.9")
    clock.advance(1)
    replicator._tick()
    assert views.status(app)["cluster"]["backlog"] == 1
