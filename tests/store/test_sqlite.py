"""The SQLite offenders store: what it records, what it answers, and what it survives."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from ipaddress import IPv4Network, IPv6Network, ip_address, ip_network
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from applianced.errors import StoreError
from applianced.rules.decision import Ban, BanDecision, BanKind, IPNetwork
from applianced.store.base import BanRecord, ClusterOutbox, OffenderStore
from applianced.store.sqlite import SqliteOffenderStore
from tests.helpers import record

REPO = Path(__file__).resolve().parents[2]


def decision(
    network: str,
    at: float = 1000.0,
    duration: float | None = 600.0,
    *,
    jail: str = "postfix",
    kind: BanKind = BanKind.AUTO,
    count: int = 1,
    lines: tuple[str, ...] = (),
) -> BanDecision:
    return BanDecision(jail, ip_network(network), duration, kind, count, at, lines)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteOffenderStore]:
    s = SqliteOffenderStore(tmp_path / "offenders.db")
    yield s
    s.close()


def test_satisfies_the_protocol(store: SqliteOffenderStore) -> None:
    """SqliteOffenderStore implements both interfaces: OffenderStore and ClusterOutbox."""
    assert isinstance(store, OffenderStore)
    assert isinstance(store, ClusterOutbox)


def test_record_and_read_back(tmp_path: Path) -> None:
    """active_bans returns the recorded decisions' Bans, also after a reopen."""
    path = tmp_path / "offenders.db"
    store = SqliteOffenderStore(path)
    ds = [
        decision("192.0.2.7/32", jail="postfix", count=1),
        decision("2001:db8::/64", 1001.5, 3600.0, jail="dovecot", kind=BanKind.MANUAL, count=4),
    ]
    bans = record(store, ds)
    statements: list[str] = []
    store._conn.set_trace_callback(statements.append)
    store.record_bans([])  # nothing to do: not even a transaction
    store._conn.set_trace_callback(None)
    assert statements == []
    assert store.active_bans(1002.0) == bans
    store.close()
    store.close()
    again = SqliteOffenderStore(path)
    assert again.active_bans(1002.0) == bans
    assert again.active_bans(1002.0)[1] == Ban(
        "dovecot", ip_network("2001:db8::/64"), 1001.5, 4601.5, BanKind.MANUAL, 4
    )
    again.close()


def test_permanent_ban(store: SqliteOffenderStore) -> None:
    """A ban without duration has no expiry: active forever, never due."""
    (ban,) = record(store, [decision("198.51.100.1/32", 1000.0, None, kind=BanKind.BLACKLIST)])
    assert ban.expires_at is None and ban.permanent
    assert store.active_bans(1e12) == [ban]
    assert store.due_expiries(1e12) == []


def test_end_bans(store: SqliteOffenderStore) -> None:
    """end_bans ends the not-ended rows of each (jail, network) once, and only those."""
    a, b, c = record(
        store,
        [
            decision("192.0.2.1/32", jail="postfix"),
            decision("192.0.2.1/32", jail="dovecot"),
            decision("192.0.2.2/32", jail="postfix"),
        ],
    )
    assert store.end_bans([a, c], 1100.0, "unban") == 2
    assert store.active_bans(1100.0) == [b]
    assert store.end_bans([a, c], 1200.0, "flush") == 0  # already ended: not an error
    stranger = Ban("postfix", ip_network("203.0.113.9/32"), 0.0, None, BanKind.AUTO, 1)
    assert store.end_bans([stranger], 1200.0, "unban") == 0
    assert store.end_bans([], 1200.0, "unban") == 0
    (entry,) = store.history(ip_address("192.0.2.2"))
    assert (entry.ban, entry.ended_at, entry.end_reason) == (c, 1100.0, "unban")


def test_new_ban_supersedes_the_open_one(store: SqliteOffenderStore) -> None:
    """A new ban of a (jail, network) ends the open one as "superseded"; other jails keep theirs."""
    (old,) = record(store, [decision("192.0.2.1/32", 1000.0, 600.0)])
    other_jail, new = record(
        store,
        [
            decision("192.0.2.1/32", 1100.0, jail="dovecot"),
            decision("192.0.2.1/32", 1200.0, None, kind=BanKind.BLACKLIST, count=2),
        ],
    )
    assert store.active_bans(1300.0) == [other_jail, new]
    assert [(r.ban, r.ended_at, r.end_reason) for r in store.history(ip_address("192.0.2.1"))] == [
        (new, None, None),
        (other_jail, None, None),
        (old, 1200.0, "superseded"),
    ]


def test_batch_duplicates_keep_the_last(store: SqliteOffenderStore) -> None:
    """Two decisions for one (jail, network) in one batch leave only the later one open."""
    first, last = record(store, [decision("192.0.2.1/32", 1000.0), decision("192.0.2.1/32")])
    assert store.active_bans(1000.0) == [last]
    older = store.history(ip_address("192.0.2.1"))[1]
    assert (older.ban, older.end_reason) == (first, "superseded")
    assert prior(store, "postfix", ip_network("192.0.2.1/32"), 0.0) == 2


def test_stale_ban_does_not_end_a_newer_one(store: SqliteOffenderStore) -> None:
    """end_bans with a Ban read before a newer ban superseded it leaves the newer ban alone."""
    (old,) = record(store, [decision("192.0.2.1/32", 1000.0, 600.0)])
    due = store.due_expiries(1600.0)
    assert due == [old]
    (new,) = record(store, [decision("192.0.2.1/32", 1650.0, None, count=2)])
    assert store.end_bans(due, 1700.0, "expired") == 0
    assert store.active_bans(1700.0) == [new]
    later = Ban("postfix", ip_network("192.0.2.1/32"), 9999.0, None, BanKind.MANUAL, 1)
    assert store.end_bans([later], 1700.0, "unban") == 1  # an operator's unban "as of now"


def test_active_and_due_around_the_expiry_instant(store: SqliteOffenderStore) -> None:
    """At expires_at a ban stops being active and becomes due; once ended it is neither."""
    (ban,) = record(store, [decision("192.0.2.1/32", 1000.0, 600.0)])
    assert store.active_bans(1599.999) == [ban]
    assert store.due_expiries(1599.999) == []
    assert store.active_bans(1600.0) == []
    assert store.due_expiries(1600.0) == [ban]
    assert store.due_expiries(9999.0) == [ban]
    store.end_bans(store.due_expiries(9999.0), 9999.0, "expired")
    assert store.active_bans(1000.0) == []
    assert store.due_expiries(9999.0) == []


def test_many_due_at_once_oldest_expiry_first(store: SqliteOffenderStore) -> None:
    """After a downtime every due ban is returned, ordered by expiry."""
    store.record_bans([decision(f"192.0.2.{i}/32", 1000.0, 100.0 * (10 - i)) for i in range(10)])
    due = store.due_expiries(5000.0)
    assert len(due) == 10
    assert [b.expires_at for b in due] == sorted(b.expires_at or 0 for b in due)


def prior(store: SqliteOffenderStore, jail: str, network: IPNetwork, since: float) -> int:
    return store.prior_bans(jail, [network], since)[network]


def test_prior_bans_for_many_networks_in_one_call(store: SqliteOffenderStore) -> None:
    """A storm's offences are looked up together; unknown networks count 0."""
    nets = [ip_network(f"198.18.{i // 250}.{i % 250}/32") for i in range(1200)]
    store.record_bans([decision(str(n), at=1.0) for n in nets[::2]])
    counts = store.prior_bans("postfix", nets, 0.0)
    assert [counts[n] for n in nets] == [1, 0] * 600


def test_prior_bans_since_edges(store: SqliteOffenderStore) -> None:
    """prior_bans counts this jail's bans of exactly this network started at or after since."""
    net = "192.0.2.1/32"
    bans = record(
        store,
        [decision(net, at, count=i + 1) for i, at in enumerate((100.0, 200.0, 300.0))]
        + [
            decision(net, 250.0, jail="dovecot"),
            decision("192.0.2.0/24", 250.0),
            decision("192.0.2.2/32", 250.0),
        ],
    )
    assert store.end_bans(bans[2:3], 350.0, "unban") == 1  # ended bans still count
    n = ip_network(net)
    assert prior(store, "postfix", n, 0.0) == 3
    assert prior(store, "postfix", n, 100.0) == 3
    assert prior(store, "postfix", n, 200.0) == 2
    assert prior(store, "postfix", n, 200.0001) == 1
    assert prior(store, "postfix", n, 300.0) == 1
    assert prior(store, "postfix", n, 300.5) == 0
    assert prior(store, "dovecot", n, 0.0) == 1
    assert prior(store, "sshd", n, 0.0) == 0


def test_prior_bans_counts_exactly_the_network(store: SqliteOffenderStore) -> None:
    """Networks sharing a first address are told apart (a /24, its first /32 and /25), and
    IPv4 and IPv6 networks are counted in one call."""
    nets = ["192.0.2.0/24", "192.0.2.0/32", "192.0.2.0/25", "2001:db8::/64", "2001:db8::/128"]
    store.record_bans([decision(n, 100.0 + i) for i, n in enumerate(nets) for _ in range(i + 1)])
    counts = store.prior_bans("postfix", [ip_network(n) for n in [*nets, "2001:db8::/48"]], 0.0)
    assert [counts[ip_network(n)] for n in nets] == [1, 2, 3, 4, 5]
    assert counts[ip_network("2001:db8::/48")] == 0


def test_prior_bans_probes_an_index(store: SqliteOffenderStore) -> None:
    """prior_bans is asked once per storm's batch: it must not scan the whole history."""
    store.record_bans([decision(f"192.0.2.{i}/32") for i in range(10)])
    statements: list[str] = []
    store._conn.set_trace_callback(statements.append)
    store.prior_bans("postfix", [ip_network("192.0.2.1/32"), ip_network("192.0.2.2/32")], 0.0)
    store._conn.set_trace_callback(None)
    (query,) = statements
    plan = [row[3] for row in store._conn.execute(f"EXPLAIN QUERY PLAN {query}")]
    assert any("USING INDEX bans_net" in step for step in plan), plan
    assert not any(step.startswith("SCAN bans") for step in plan), plan


def test_find_active_address_inside_v4_prefix(store: SqliteOffenderStore) -> None:
    """A /24 ban covers its addresses and sub-networks, not its neighbours nor supernets."""
    wide, host = record(
        store, [decision("192.0.2.0/24", jail="postfix"), decision("192.0.2.77/32", jail="dovecot")]
    )
    assert store.find_active(ip_network("192.0.2.77/32")) == [wide, host]
    assert store.find_active(ip_network("192.0.2.200/32")) == [wide]
    assert store.find_active(ip_network("192.0.2.255/32")) == [wide]
    assert store.find_active(ip_network("192.0.2.0/25")) == [wide]
    assert store.find_active(ip_network("192.0.2.0/24")) == [wide]
    assert store.find_active(ip_network("192.0.0.0/16")) == []
    assert store.find_active(ip_network("192.0.3.0/32")) == []
    assert store.find_active(ip_network("192.0.1.255/32")) == []
    assert store.find_active(ip_network("192.0.2.77/32"), "dovecot") == [host]
    assert store.find_active(ip_network("192.0.2.77/32"), "sshd") == []


def test_find_active_ipv6_64(store: SqliteOffenderStore) -> None:
    """A /64 ban covers every address of the /64 and nothing beside it."""
    (ban,) = record(store, [decision("2001:db8:1:2::/64")])
    assert store.find_active(ip_network("2001:db8:1:2:ffff:ffff:ffff:ffff/128")) == [ban]
    assert store.find_active(ip_network("2001:db8:1:2::/128")) == [ban]
    assert store.find_active(ip_network("2001:db8:1:3::/128")) == []
    assert store.find_active(ip_network("2001:db8:1::/48")) == []


def test_ipv4_and_ipv6_never_mix(store: SqliteOffenderStore) -> None:
    """An IPv4 query never finds an IPv6 ban, even ::/0 or ::ffff:0:0/96, and vice versa."""
    v4_all, v6_all, mapped = record(
        store, [decision("0.0.0.0/0"), decision("::/0"), decision("::ffff:0:0/96")]
    )
    assert store.find_active(ip_network("10.0.0.1/32")) == [v4_all]
    assert store.find_active(ip_network("::ffff:10.0.0.1/128")) == [v6_all, mapped]
    assert store.find_active(ip_network("::a00:1/128")) == [v6_all]  # same low bits as 10.0.0.1
    assert [r.ban for r in store.history(ip_address("10.0.0.1"))] == [v4_all]


def _networks(version: int) -> st.SearchStrategy[IPNetwork]:
    bits = 32 if version == 4 else 128
    # Few distinct high and low bits and prefixes near both ends, so networks often nest.
    address = st.builds(lambda hi, lo: hi << (bits - 2) | lo, st.integers(0, 3), st.integers(0, 63))
    prefix = st.integers(0, 4) | st.integers(bits - 6, bits)
    net = IPv4Network if version == 4 else IPv6Network
    return st.builds(lambda a, p: net((a, p), strict=False), address, prefix)


_any_network = _networks(4) | _networks(6)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(stored=st.lists(_any_network, max_size=12), query=_any_network)
def test_containment_matches_subnet_of(
    tmp_path: Path, stored: list[IPNetwork], query: IPNetwork
) -> None:
    """find_active and history return exactly the stored networks that query is a subnet of."""
    store = SqliteOffenderStore(Path(tempfile.mkdtemp(dir=tmp_path)) / "o.db")  # one per example
    ds = [decision(str(n), float(i), jail=f"j{i}") for i, n in enumerate(stored)]
    store.record_bans(ds)
    expected = [
        n
        for n in stored
        if n.version == query.version and query.subnet_of(n)  # type: ignore[arg-type]
    ]
    assert [b.network for b in store.find_active(query)] == expected
    assert [r.ban.network for r in store.history(query, limit=100)] == expected[::-1]
    store.close()


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    stored=st.lists(
        st.tuples(_any_network, st.sampled_from(["postfix", "dovecot"]), st.integers(0, 9)),
        max_size=15,
    ),
    asked=st.lists(_any_network, max_size=8),
    since=st.integers(0, 10),
)
def test_prior_bans_counts_as_a_scan_of_every_ban_would(
    tmp_path: Path, stored: list[tuple[IPNetwork, str, int]], asked: list[IPNetwork], since: int
) -> None:
    """prior_bans equals counting, for each asked network, the bans of exactly it in the jail
    started at or after since (networks that nest or share a first address, both versions,
    ended and superseded bans included)."""
    store = SqliteOffenderStore(Path(tempfile.mkdtemp(dir=tmp_path)) / "o.db")  # one per example
    store.record_bans([decision(str(n), float(at), jail=jail) for n, jail, at in stored])
    counts = store.prior_bans("postfix", asked, float(since))
    assert counts == {
        n: sum(1 for m, jail, at in stored if (m, jail) == (n, "postfix") and at >= since)
        for n in asked
    }
    store.close()


def test_find_active_ignores_time_but_not_ended(store: SqliteOffenderStore) -> None:
    """find_active returns bans past their expiry that are not ended; the caller filters time."""
    old, ended = record(
        store, [decision("192.0.2.1/32", 0.0, 1.0), decision("192.0.2.0/24", 0.0, 1.0, jail="x")]
    )
    store.end_bans([ended], 5.0, "unban")
    assert store.find_active(ip_network("192.0.2.1/32")) == [old]


def test_history_contains_newest_first_with_limit(tmp_path: Path) -> None:
    """history lists every containing ban (any jail, ended or not) newest first, up to limit."""
    store = SqliteOffenderStore(tmp_path / "o.db", lines_per_ban=5)
    (first,) = record(store, [decision("192.0.2.9/32", 100.0, lines=("a", "b"))])
    store.end_bans([first], 150.0, "expired")
    second, third, _other = record(
        store,
        [
            decision("192.0.2.0/24", 200.0, jail="dovecot", count=2),
            decision("192.0.2.9/32", 300.0, None, kind=BanKind.BLACKLIST, count=3),
            decision("192.0.2.10/32", 400.0),
        ],
    )
    got = store.history(ip_address("192.0.2.9"))
    assert got == [
        BanRecord(third, None, None, ()),
        BanRecord(second, None, None, ()),
        BanRecord(first, 150.0, "expired", ("a", "b")),
    ]
    assert store.history(ip_network("192.0.2.9/32"), limit=2) == got[:2]
    assert [r.ban for r in store.history(ip_network("192.0.2.0/24"))] == [second]
    assert store.history(ip_address("198.51.100.1")) == []
    store.close()


def test_lines_capped_to_the_most_recent(tmp_path: Path) -> None:
    """Only the last lines_per_ban matched lines are kept, in their order; 0 keeps none."""
    lines = tuple(f"line {i}" for i in range(30))
    capped = SqliteOffenderStore(tmp_path / "a.db", lines_per_ban=3)
    capped.record_bans([decision("192.0.2.1/32", lines=lines)])
    assert capped.history(ip_address("192.0.2.1"))[0].lines == ("line 27", "line 28", "line 29")
    capped.close()
    default = SqliteOffenderStore(tmp_path / "b.db")
    default.record_bans([decision("192.0.2.1/32", lines=lines), decision("192.0.2.2/32")])
    assert default.history(ip_address("192.0.2.1"))[0].lines == lines[-20:]
    assert default.history(ip_address("192.0.2.2"))[0].lines == ()
    default.close()
    none = SqliteOffenderStore(tmp_path / "c.db", lines_per_ban=0)
    none.record_bans([decision("192.0.2.1/32", lines=("évité ☃",))])
    assert none.history(ip_address("192.0.2.1"))[0].lines == ()
    none.close()
    with pytest.raises(ValueError, match="lines_per_ban"):
        SqliteOffenderStore(tmp_path / "d.db", lines_per_ban=-1)


def test_ban_survives_sigkill_right_after_record(tmp_path: Path) -> None:
    """A ban is on disk once record_bans returns: SIGKILL right after loses neither it nor count."""
    path = tmp_path / "offenders.db"
    child = textwrap.dedent(
        f"""
        import os, signal
        from ipaddress import ip_network
        from pathlib import Path
        from applianced.rules.decision import BanDecision, BanKind
        from applianced.store.sqlite import SqliteOffenderStore
        store = SqliteOffenderStore(Path({str(path)!r}))
        store.record_bans([BanDecision("postfix", ip_network("192.0.2.66/32"), 600.0,
                                       BanKind.AUTO, 7, 1000.0, ("why",))])
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-c", child], env=env, capture_output=True, timeout=60)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()
    assert (tmp_path / "offenders.db-wal").stat().st_size > 0  # never checkpointed nor closed
    store = SqliteOffenderStore(path)
    (ban,) = store.active_bans(1000.0)
    assert (ban.network, ban.count, ban.expires_at) == (ip_network("192.0.2.66/32"), 7, 1600.0)
    assert prior(store, "postfix", ip_network("192.0.2.66/32"), 0.0) == 1
    assert store.history(ip_address("192.0.2.66"))[0].lines == ("why",)
    store.close()


def test_connection_settings(store: SqliteOffenderStore) -> None:
    """The store runs in WAL mode with synchronous=NORMAL, foreign keys on, schema version 3."""
    conn = store._conn  # synchronous and foreign_keys are per connection: ask this one
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
    assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 3
    assert conn.execute("PRAGMA busy_timeout").fetchone()[0] > 0
    store.record_bans([decision("192.0.2.1/32", lines=("x",))])
    conn.execute("DELETE FROM bans")  # what a future retention purge will do
    assert conn.execute("SELECT count(*) FROM ban_lines").fetchone()[0] == 0  # cascaded


def test_failed_batch_is_rolled_back(store: SqliteOffenderStore) -> None:
    """When one row of a batch fails nothing of the batch is stored, and StoreError is raised."""
    store._conn.execute(
        "CREATE TEMP TRIGGER boom BEFORE INSERT ON bans WHEN NEW.jail = 'boom'"
        " BEGIN SELECT RAISE(ABORT, 'boom'); END"
    )
    with pytest.raises(StoreError, match="boom"):
        store.record_bans([decision("192.0.2.1/32"), decision("192.0.2.2/32", jail="boom")])
    assert store.active_bans(0.0) == []
    assert store.record_bans([decision("192.0.2.3/32")]) != []  # the store is still usable


def test_batch_of_ten_thousand_is_one_transaction(store: SqliteOffenderStore) -> None:
    """10,000 decisions go in with a single BEGIN ... COMMIT and all come back."""
    ds = [
        decision(f"10.{i >> 8 & 255}.{i & 255}.1/32", 1000.0 + i, lines=("l1", "l2", "l3"))
        for i in range(10_000)
    ]
    statements: list[str] = []
    store._conn.set_trace_callback(statements.append)
    store.record_bans(ds)
    store._conn.set_trace_callback(None)
    assert [s for s in statements if s.startswith(("BEGIN", "COMMIT"))] == [
        "BEGIN IMMEDIATE",
        "COMMIT",
    ]
    assert len(store.active_bans(1000.0)) == 10_000
    assert prior(store, "postfix", ip_network("10.39.15.1/32"), 0.0) == 1


def test_newer_schema_refused(tmp_path: Path) -> None:
    """A database written by a newer schema is refused, naming both versions."""
    path = tmp_path / "offenders.db"
    SqliteOffenderStore(path).close()
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA user_version = 9")
    conn.close()
    with pytest.raises(StoreError, match=r"schema version 9.*versions 1 to 3") as info:
        SqliteOffenderStore(path)
    assert str(path) in str(info.value)


def test_not_a_database_refused(tmp_path: Path) -> None:
    """A file that is not SQLite gives a StoreError naming the file and what to do."""
    path = tmp_path / "offenders.db"
    path.write_bytes(b"this is a mail log, not a database\n" * 100)
    damaged = r"is damaged \(file is not a database\).*appliancectl store recover"
    with pytest.raises(StoreError, match=damaged) as info:
        SqliteOffenderStore(path)
    assert str(path) in str(info.value)
    assert path.read_bytes().startswith(b"this is a mail log")  # left untouched


def test_other_sqlite_database_refused(tmp_path: Path) -> None:
    """A SQLite database of some other program is refused rather than migrated."""
    path = tmp_path / "other.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE users (name TEXT)")
    conn.close()
    with pytest.raises(StoreError, match="not an applianced offenders store"):
        SqliteOffenderStore(path)


def test_unusable_directory_refused(tmp_path: Path) -> None:
    """A parent that cannot be a directory gives a StoreError naming the path and what to check."""
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    path = blocker / "sub" / "offenders.db"
    with pytest.raises(StoreError, match="writable by the applianced user") as info:
        SqliteOffenderStore(path)
    assert str(path) in str(info.value)


def test_missing_directory_created_private(tmp_path: Path) -> None:
    """A missing parent directory is created, with no more than mode 0750."""
    path = tmp_path / "var" / "lib" / "applianced" / "offenders.db"
    SqliteOffenderStore(path).close()
    assert path.parent.stat().st_mode & 0o777 & ~0o750 == 0
    assert path.stat().st_mode & 0o777 & ~0o640 == 0
