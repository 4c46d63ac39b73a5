"""The local store in cluster mode: the outbox written with each change, the adoption of
other appliances' changes (idempotent, by uid), the cursor, and the migration of a store
made before cluster mode. Real SQLite files in tmp_path; no database server."""

from __future__ import annotations

import sqlite3
from ipaddress import ip_network
from pathlib import Path

from applianced.rules.decision import Ban, BanDecision, BanKind
from applianced.store.base import BanEvent
from applianced.store.migrations import MIGRATIONS as _MIGRATIONS
from applianced.store.sqlite import SqliteOffenderStore
from tests.helpers import record

T0 = 1_800_000_000.0
NET = ip_network("198.51.100.7/32")


def store(tmp_path: Path, name: str = "a") -> SqliteOffenderStore:
    return SqliteOffenderStore(tmp_path / f"{name}.sqlite", node=name, journal=True)


def decision(at: float = T0, duration: float | None = 600.0, count: int = 1) -> BanDecision:
    lines = ("[192.0.2.25] smtpd: auth failed from 198.51.100.7",)
    return BanDecision("smtp", NET, duration, BanKind.AUTO, count, at, lines)


def remote(uid: str, at: float = T0, seq: int = 1, node: str = "b") -> BanEvent:
    ban = Ban("smtp", NET, at, at + 600.0, BanKind.AUTO, 1)
    return BanEvent(seq, "ban", uid, node, "192.0.2.99", ban, ("[192.0.2.99] line",))


def test_a_ban_and_an_unban_go_to_the_outbox_with_node_and_sender(tmp_path: Path) -> None:
    s = store(tmp_path)
    (ban,) = record(s, [decision()])
    (pushed,) = s.pending(10)
    assert (pushed.op, pushed.node, pushed.sender, pushed.ban) == ("ban", "a", "192.0.2.25", ban)
    assert pushed.lines == ("[192.0.2.25] smtpd: auth failed from 198.51.100.7",)
    s.end_bans([ban], T0 + 5, "unban")
    ban_event, end_event = s.pending(10)
    assert (end_event.op, end_event.uid, end_event.ended_at) == ("end", ban_event.uid, T0 + 5)
    assert s.backlog() == 2
    s.pushed(end_event.seq)
    assert s.pending(10) == [] and s.backlog() == 0


def test_expiries_and_local_changes_stay_out_of_the_outbox(tmp_path: Path) -> None:
    s = store(tmp_path)
    (ban,) = record(s, [decision()])
    s.pushed(s.pending(10)[-1].seq)
    s.end_bans([ban], T0 + 600, "expired")
    s.record_bans([decision(at=T0 + 700)], share=False)
    assert s.pending(10) == []
    plain = SqliteOffenderStore(tmp_path / "plain.sqlite")  # not in cluster mode
    plain.record_bans([decision()])
    assert plain.pending(10) == []


def test_the_echo_of_its_own_changes_changes_nothing(tmp_path: Path) -> None:
    s = store(tmp_path)
    (ban,) = record(s, [decision()])
    s.end_bans([ban], T0 + 5, "unban")
    echo = s.pending(10)
    assert s.adopt(echo, cursor=2, now=T0 + 6) == ([], [])
    assert len(s.history(NET)) == 1 and s.cursor() == 2


def test_adopt_is_idempotent_and_moves_the_cursor(tmp_path: Path) -> None:
    s = store(tmp_path)
    started, ended = s.adopt([remote("u1")], cursor=7, now=T0 + 1)
    assert [b.network for b in started] == [NET] and ended == []
    assert s.adopt([remote("u1")], cursor=7, now=T0 + 2) == ([], [])
    assert s.cursor() == 7 and s.pending(10) == []
    (record,) = s.history(NET)
    assert (record.node, record.sender, record.ended_at) == ("b", "192.0.2.99", None)
    end = BanEvent(8, "end", "u1", "b", "", started[0], (), T0 + 3, "unban")
    assert s.adopt([end, end], cursor=8, now=T0 + 3) == ([], started)
    assert s.find_active(NET) == []


def test_an_older_remote_ban_does_not_supersede_a_newer_one(tmp_path: Path) -> None:
    s = store(tmp_path)
    (mine,) = record(s, [decision(at=T0 + 100)])
    started, _ = s.adopt([remote("old", at=T0)], cursor=1, now=T0 + 101)
    assert started == [] and s.find_active(NET) == [mine]
    newer, _ = s.adopt([remote("new", at=T0 + 200)], cursor=2, now=T0 + 201)
    assert s.find_active(NET) == newer
    assert s.prior_bans("smtp", [NET], T0 - 1) == {NET: 3}  # counts are cluster-wide


def test_a_remote_ban_already_expired_is_recorded_ended(tmp_path: Path) -> None:
    s = store(tmp_path)
    assert s.adopt([remote("u1")], cursor=1, now=T0 + 601) == ([], [])
    (record,) = s.history(NET)
    assert (record.ended_at, record.end_reason) == (T0 + 600, "expired")


def test_a_store_from_before_cluster_mode_is_migrated(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    with sqlite3.connect(path) as conn:  # a store of version 1, with one ban
        for statement in (
            *_MIGRATIONS[0],
            "INSERT INTO bans (jail, network, version, first, last, started_at, kind, count)"
            " VALUES ('smtp', '198.51.100.7/32', 4, x'c6336407', x'c6336407', 1, 'auto', 1)",
            "PRAGMA user_version = 1",
        ):
            conn.execute(statement)
    s = SqliteOffenderStore(path, node="a", journal=True)
    indexes = {r[0] for r in s._conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert "bans_prior" not in indexes and "bans_net" in indexes  # migration 3
    assert [b.network for b in s.active_bans(T0)] == [NET]
    assert s.cursor() == 0 and s.pending(10) == []
    s.record_bans([decision(at=T0)])
    (pushed,) = s.pending(10)
    assert pushed.uid == s._uid_prefix + "2" and len(pushed.uid) == 18
