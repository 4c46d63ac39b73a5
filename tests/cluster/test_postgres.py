"""The cluster log against a real PostgreSQL server (a private cluster, tests/pg.py): schema
migrations, idempotent pushes, reads in order, shared failures, heartbeats, and the connection
arguments (the password from a file or the environment, never from or in the DSN)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from ipaddress import ip_address, ip_network
from pathlib import Path
from typing import Any

import psycopg
import pytest

from applianced.cluster import postgres
from applianced.cluster.postgres import ClusterSchemaError
from applianced.conf.schema import StateConf
from applianced.rules.decision import Ban, BanKind
from applianced.rules.engine import CountedFailure
from applianced.store.base import BanEvent
from tests.pg import PASSWORD, PgServer, pg_missing

pytestmark = pytest.mark.skipif(pg_missing() is not None, reason=str(pg_missing()))

T0 = 1_800_000_000.0


@pytest.fixture
def conn(pg: PgServer) -> Iterator[psycopg.Connection[Any]]:
    with pg.connect() as c:
        postgres.migrate(c)
        yield c


def event(uid: str, op: str = "ban", address: str = "198.51.100.7") -> BanEvent:
    ban = Ban("smtp", ip_network(address), T0, T0 + 600, BanKind.AUTO, 2)
    end = (T0 + 10, "unban") if op == "end" else (None, None)
    return BanEvent(0, op, uid, "alpha", "192.0.2.25", ban, ("[192.0.2.25] a line",), *end)  # type: ignore[arg-type]


def test_a_push_is_idempotent_and_reads_back_in_order(conn: psycopg.Connection[Any]) -> None:
    start = postgres.fetch(conn, 0, 10_000)
    after = start[-1].seq if start else 0
    batch = [event("p1"), event("p2", address="198.51.100.8"), event("p1", "end")]
    assert postgres.push(conn, batch, "alpha") == 3
    assert postgres.push(conn, batch, "alpha") == 0  # a replay after a crash adds nothing
    got = postgres.fetch(conn, after, 10)
    assert [(e.op, e.uid) for e in got] == [("ban", "p1"), ("ban", "p2"), ("end", "p1")]
    assert got[0].ban == batch[0].ban and got[0].lines == batch[0].lines
    assert (got[0].node, got[0].sender) == ("alpha", "192.0.2.25")
    assert (got[2].ended_at, got[2].end_reason) == (T0 + 10, "unban")
    assert postgres.fetch(conn, got[-1].seq, 10) == []


def test_migrate_twice_is_harmless_and_a_newer_schema_is_refused(
    conn: psycopg.Connection[Any],
) -> None:
    postgres.migrate(conn)
    conn.execute("INSERT INTO applianced_schema VALUES (99)")
    try:
        with pytest.raises(ClusterSchemaError, match="schema version 99"):
            postgres.migrate(conn)
    finally:
        conn.execute("DELETE FROM applianced_schema WHERE version = 99")


def test_shared_failures_read_back_without_our_own_and_old_ones_are_pruned(
    conn: psycopg.Connection[Any],
) -> None:
    start = postgres.last_failure(conn)
    now = time.time()
    old = CountedFailure("smtp", ip_address("198.51.100.9"), None, "[x] old", now - 3600, "x")
    mine = CountedFailure("smtp", ip_address("198.51.100.9"), None, "[a] mine", now, "192.0.2.1")
    theirs = CountedFailure("smtp", ip_address("2001:db8::1"), 48, "[b] net", now, "192.0.2.2")
    postgres.push_failures(conn, [old], "beta")
    postgres.push_failures(conn, [mine], "alpha")
    postgres.push_failures(conn, [theirs], "beta")
    read, got = postgres.fetch_failures(conn, start, "alpha", 10)
    assert got == [theirs] and read == postgres.last_failure(conn)  # old: pruned by the push
    assert postgres.fetch_failures(conn, read, "alpha", 10) == (read, [])


def test_heartbeats_list_every_node(conn: psycopg.Connection[Any]) -> None:
    postgres.heartbeat(conn, "beta", 3, "0.1.0")
    nodes = {n["name"]: n for n in postgres.heartbeat(conn, "alpha", 0, "0.1.0")}
    assert nodes["beta"]["backlog"] == 3 and 0 <= nodes["alpha"]["age"] < 5


def test_the_password_comes_from_the_file_or_the_environment(
    pg: PgServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    conf = StateConf("postgresql", pg.dsn, pg.password_file, "alpha")
    with psycopg.connect(**postgres.connect_args(conf)) as c:
        assert c.execute("SELECT current_user").fetchone() == ("applianced",)
    monkeypatch.setenv(postgres.PASSWORD_ENV, PASSWORD)
    args = postgres.connect_args(StateConf("postgresql", pg.dsn, None, "alpha"))
    assert args["password"] == PASSWORD
    monkeypatch.delenv(postgres.PASSWORD_ENV)
    monkeypatch.delenv("PGPASSWORD", raising=False)
    with pytest.raises(psycopg.OperationalError) as info:
        psycopg.connect(**postgres.connect_args(StateConf("postgresql", pg.dsn, None, "a")))
    assert PASSWORD not in str(info.value)
    assert postgres.describe(pg.dsn) == f"applianced@{pg.socket_dir}:5432/applianced"


def test_addresses_read_from_the_cluster_are_canonical(conn: psycopg.Connection[Any]) -> None:
    """An IPv4-mapped spelling in the shared log (an appliance of an earlier version, a hand
    edit) is read as the IPv4 address, as every other entry point reads it."""
    start, after = postgres.last_failure(conn), postgres.fetch(conn, 0, 10_000)
    now = time.time()
    mapped = CountedFailure("smtp", ip_address("::ffff:198.51.100.9"), None, "[b] x", now, "b")
    postgres.push_failures(conn, [mapped], "beta")
    _, got = postgres.fetch_failures(conn, start, "alpha", 10)
    assert [f.address for f in got] == [ip_address("198.51.100.9")]
    postgres.push(conn, [event("m1", address="::ffff:198.51.100.10")], "beta")
    (pushed,) = postgres.fetch(conn, after[-1].seq if after else 0, 10)
    assert pushed.ban.network == ip_network("198.51.100.10/32")
