"""Each bouncer's stream, against a real Appliance (task.Clock, SQLite in tmp_path, the
in-memory enforcer): every way a ban starts or ends reaches a delta, one decision per value,
a restart resends without dropping, a bouncer that fell off the log resyncs."""

from __future__ import annotations

from ipaddress import ip_network
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.task import Clock

from applianced import bans
from applianced.appliance import Appliance
from applianced.decisions.lapi import Filters
from applianced.decisions.stream import DecisionStream, Full, Response
from applianced.rules.decision import Ban, BanKind
from applianced.store.sqlite import SqliteOffenderStore
from applianced.testing import MemoryEnforcer
from tests.helpers import config, jail_conf, message, ssh_failure

T0 = 1_800_000_000.0
ALL = Filters()


def start(tmp_path: Path, clock: Clock) -> tuple[Appliance, DecisionStream]:
    sasl = jail_conf("postfix-sasl", programs=("postfix/smtpd",))
    conf = config(tmp_path, jail_conf("sshd"), sasl)
    app = Appliance(conf, SqliteOffenderStore(tmp_path / "o.sqlite"), MemoryEnforcer(), clock)
    app.start()
    return app, DecisionStream(app.active, lambda: app.engine.jails)


@pytest.fixture
def clock() -> Clock:
    c = Clock()
    c.advance(T0)
    return c


def values(part: list[dict[str, Any]] | None) -> list[tuple[str, str, str]]:
    return sorted((d["scenario"], d["value"], d["duration"]) for d in part or ())


Seen = list[tuple[str, str, str]]  # (scenario, value, duration), sorted


def pull(
    stream: DecisionStream,
    clock: Clock,
    startup: bool = False,
    name: str = "mx1",
    filters: Filters = ALL,
) -> tuple[Seen, Seen]:
    got = answer(stream.pull(name, startup, filters, clock.seconds()))
    return values(got["new"]), values(got["deleted"])


def answer(got: Response | Full) -> Response:
    return got.build() if isinstance(got, Full) else got


def test_startup_then_deltas_of_failures_unban_expiry_and_flush(
    tmp_path: Path, clock: Clock
) -> None:
    app, stream = start(tmp_path, clock)
    app.ban("sshd", ip_network("192.0.2.1/32"), 600)
    assert pull(stream, clock, startup=True) == ([("sshd", "192.0.2.1", "10m0s")], [])
    assert answer(stream.pull("mx1", False, ALL, clock.seconds())) == {
        "new": None,
        "deleted": None,
    }

    for _ in range(3):
        app.receive(message(ssh_failure("203.0.113.9"), at=clock.seconds()))
    clock.advance(0)  # the turn's offences settle
    app.ban("postfix-sasl", ip_network("198.51.100.0/24"), 30)
    clock.advance(10)
    assert pull(stream, clock) == (
        [("postfix-sasl", "198.51.100.0/24", "20s"), ("sshd", "203.0.113.9", "1m30s")],
        [],
    )

    app.unban(ip_network("192.0.2.1/32"))
    clock.advance(25)  # the /24 expires
    assert pull(stream, clock) == (
        [],
        [("postfix-sasl", "198.51.100.0/24", "-5s"), ("sshd", "192.0.2.1", "-1ms")],
    )
    app.flush()
    assert pull(stream, clock) == ([], [("sshd", "203.0.113.9", "-1ms")])
    assert pull(stream, clock) == ([], [])


def test_one_decision_per_value_the_longest_and_no_delete_while_one_is_left(
    tmp_path: Path, clock: Clock
) -> None:
    app, stream = start(tmp_path, clock)
    app.ban("sshd", ip_network("192.0.2.1/32"), 60)
    app.ban("postfix-sasl", ip_network("192.0.2.1/32"), 600)
    assert pull(stream, clock, startup=True) == ([("postfix-sasl", "192.0.2.1", "10m0s")], [])
    clock.advance(60)  # the sshd ban ends, the other is left: sent again, not deleted
    assert pull(stream, clock) == ([("postfix-sasl", "192.0.2.1", "9m0s")], [])
    app.unban(ip_network("192.0.2.1/32"))
    assert pull(stream, clock) == ([], [("postfix-sasl", "192.0.2.1", "-1ms")])


def test_a_ban_that_came_and_went_between_two_pulls_is_not_deleted(
    tmp_path: Path, clock: Clock
) -> None:
    """The bouncer never held it: a delete of an element it lacks is not sent."""
    app, stream = start(tmp_path, clock)
    assert pull(stream, clock, startup=True) == ([], [])
    app.ban("sshd", ip_network("192.0.2.1/32"), 5)
    clock.advance(6)
    assert pull(stream, clock) == ([], [])


def test_filters_and_places_are_per_bouncer(tmp_path: Path, clock: Clock) -> None:
    app, stream = start(tmp_path, clock)
    sasl_only = Filters.of({"scenarios_containing": ["sasl"]})
    assert pull(stream, clock, True, "mx1", sasl_only) == ([], [])
    assert pull(stream, clock, True, "mx2") == ([], [])
    app.ban("sshd", ip_network("192.0.2.1/32"), 60)
    app.ban("postfix-sasl", ip_network("192.0.2.2/32"), 60)
    assert pull(stream, clock, False, "mx1", sasl_only) == (
        [("postfix-sasl", "192.0.2.2", "1m0s")],
        [],
    )
    assert len(pull(stream, clock, False, "mx2")[0]) == 2


def test_a_restart_resends_every_ban_with_the_same_ids(tmp_path: Path, clock: Clock) -> None:
    """A bouncer pulling with startup=false after our restart gets every active ban again
    (re-adding is harmless), under the ids it had: nothing dropped, nothing doubled."""
    app, stream = start(tmp_path, clock)
    app.ban("sshd", ip_network("192.0.2.1/32"), 600)
    before = answer(stream.pull("mx1", True, ALL, clock.seconds()))["new"]
    app.stop()
    clock.advance(100)
    app, stream = start(tmp_path, clock)
    after = answer(stream.pull("mx1", False, ALL, clock.seconds()))
    assert after["deleted"] is None
    assert [d["id"] for d in after["new"] or ()] == [d["id"] for d in before or ()]
    assert values(after["new"]) == [("sshd", "192.0.2.1", "8m20s")]
    assert pull(stream, clock) == ([], [])


def test_a_bouncer_that_fell_off_the_log_resyncs(
    tmp_path: Path, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bans, "CHANGES_KEPT", 4)
    app, stream = start(tmp_path, clock)
    app.ban("sshd", ip_network("192.0.2.1/32"), 600)
    app.ban("sshd", ip_network("192.0.2.9/32"), 600)
    assert len(pull(stream, clock, startup=True)[0]) == 2
    for i in range(2, 5):
        app.ban("sshd", ip_network(f"192.0.2.{i}/32"), 600)
    app.unban(ip_network("192.0.2.1/32"))
    app.ban("sshd", ip_network("192.0.2.5/32"), 600)
    app.unban(ip_network("192.0.2.5/32"))
    new, deleted = pull(stream, clock)
    assert [v for _, v, _ in new] == ["192.0.2.2", "192.0.2.3", "192.0.2.4", "192.0.2.9"]
    # The log kept the last 4 changes: 192.0.2.1's end is among them and it was held, so it
    # is deleted; 192.0.2.5 came and went after the last pull: the bouncer never had it.
    assert [v for _, v, _ in deleted] == ["192.0.2.1"]


def test_a_reload_that_removes_a_jail_deletes_its_bans(tmp_path: Path, clock: Clock) -> None:
    app, stream = start(tmp_path, clock)
    app.ban("postfix-sasl", ip_network("192.0.2.1/32"), 600)
    assert len(pull(stream, clock, startup=True)[0]) == 1
    app.reload(config(tmp_path, jail_conf("sshd")))
    assert pull(stream, clock) == ([], [("postfix-sasl", "192.0.2.1", "-1ms")])


def test_a_cluster_node_serves_the_bans_it_adopts(tmp_path: Path, clock: Clock) -> None:
    """Cluster mode: the other appliances' bans enter the book through adopt, so each node's
    stream carries them, and their ends too."""
    app, stream = start(tmp_path, clock)
    assert pull(stream, clock, startup=True) == ([], [])
    theirs = Ban("sshd", ip_network("203.0.113.0/24"), T0 - 5, T0 + 55, BanKind.AUTO, 1)
    app.adopt([theirs], [])
    assert pull(stream, clock) == ([("sshd", "203.0.113.0/24", "55s")], [])
    app.adopt([], [theirs])
    assert pull(stream, clock) == ([], [("sshd", "203.0.113.0/24", "-1ms")])
