"""The durable offenders store in SQLite: every ban ever recorded, which are active, and why.

ARCHITECTURE. This module owns the ban history; the rules decide, this remembers. The Appliance
calls it from the reactor thread: ``record_bans`` with one reactor turn's decisions, right after
the Enforcer took them; ``due_expiries`` then ``end_bans(..., "expired")`` on its expiry timer (and
at start, when a downtime may have left many due); ``end_bans`` for unban and flush;
``active_rows`` at start, to restore the kernel sets; ``prior_bans`` when turning an Offence into a
BanDecision (escalation, the max_count blacklist); ``history`` for ``appliancectl why``;
``find_active``, the same containment query over active bans, for a caller without the Appliance's
in-memory map (the running daemon keeps its own). ``SqliteOffenderStore`` implements both
interfaces of ``store/base.py`` (``OffenderStore``, ``ClusterOutbox``); SQL stays inside it
and its statements module ``store/queries.py``, the schema's migrations in
``store/migrations.py``. ``service.make_service`` builds it.

Cluster mode (``[state] backend = "postgresql"``) keeps this store as the Appliance's one
synchronous store (the reactor never waits on a network database, and bans go on while it is
down): it becomes the appliance's full local replica of the cluster's ban list. Each ban has a
global ``uid``, and its origin ``node`` and deciding ``sender``; with ``journal`` on, every ban
and every operator's unban/flush also writes an outbox row in the same transaction
(``pending``/``pushed`` drain it, so a crash loses nothing), and ``adopt`` records other
appliances' changes idempotently by uid together with the cluster log's cursor.
``applianced/cluster/`` moves them both ways.

Units: times are POSIX seconds (UTC, floats) from the injected clock. Networks are stored as
``str(network)`` (canonical), jails by name. A write returns only once it is durable.

Over 400 lines: every call of the one database behind its two interfaces; the SQL text is in
``store/queries.py``, the schema in ``store/migrations.py``.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from ipaddress import ip_network
from pathlib import Path
from typing import Any

from applianced.errors import StoreError
from applianced.rules.decision import Ban, BanDecision, IPAddress, IPNetwork
from applianced.store.base import BanEvent, BanRecord, BanRow, ban_from_row, sender_of
from applianced.store.migrations import migrate
from applianced.store.queries import (
    BAN_COLUMNS,
    FIND,
    HISTORY,
    INSERT,
    INSERT_LINES,
    LINES_JSON,
    containment_params,
    span,
)

__all__ = ["STORE_FILE", "SqliteOffenderStore", "damaged"]

STORE_FILE = "offenders.sqlite"  # in the state directory

_IN_CHUNK = 500  # networks per IN (...) list: well under SQLite's variable limit
_BUSY_TIMEOUT = 5.0  # seconds; only another process (a backup, sqlite3 by hand) holds the lock
_SHARED_ENDS = ("unban", "flush")  # operators' ends go to the cluster; expiries are computed


def _event(r: Sequence[Any]) -> BanEvent:
    """An outbox row: seq, op, uid, node, sender, the ban's columns, lines, its end."""
    end = (r[12], r[13]) if r[1] == "end" else (None, None)
    lines = tuple(json.loads(r[11] or "[]"))
    return BanEvent(r[0], r[1], r[2], r[3], r[4], ban_from_row(r[5:11]), lines, *end)


def _explain(path: Path, error: sqlite3.Error) -> str:
    """An operator's reading of a SQLite error: what happened to which file, what to check."""
    name = getattr(error, "sqlite_errorname", "")
    if name == "SQLITE_NOTADB" or name.startswith("SQLITE_CORRUPT"):
        return damaged(path, str(error))
    if name.startswith("SQLITE_CANTOPEN") or name.startswith("SQLITE_READONLY"):
        return (
            f"cannot write the offenders database {path} ({error}); check that {path.parent}"
            " and the file are writable by the applianced user (SQLite also creates"
            f" {path.name}-wal and {path.name}-shm there)"
        )
    if name.startswith("SQLITE_BUSY") or name.startswith("SQLITE_LOCKED"):
        return f"{path} is locked by another process ({error}); close it and retry"
    if name == "SQLITE_FULL" or (name.startswith("SQLITE_IOERR") and _full(path.parent)):
        return (
            f"{path}: the disk is full ({error}); free space on {path.parent}. The kernel keeps"
            " enforcing the bans meanwhile, and the next start adopts those the store lacks"
        )
    return f"offenders database {path}: {error}"


def _full(directory: Path) -> bool:
    """Whether the filesystem of ``directory`` has no room for a page of SQLite's files."""
    try:
        st = os.statvfs(directory)
    except OSError:
        return False
    return st.f_bavail * st.f_frsize < 64 * 1024


def damaged(path: Path, problem: str) -> str:
    """A damaged store's message: what SQLite found, and the recovery steps."""
    return (
        f"the offenders database {path} is damaged ({problem}); applianced does not start on"
        " it, so as not to lose bans. With applianced stopped, run `appliancectl store"
        " recover`: it moves the damaged file aside (kept, not deleted) and builds a new store"
        " from every ban it can read; the next start then adopts the bans the kernel holds"
        " and the new store lacks. Or restore the file from a backup"
    )


def _check(conn: sqlite3.Connection, path: Path) -> None:
    """SQLite's quick_check: every page and row format checked, not the indexes' contents
    (0.06 s on a 100,000-ban store of 38 MiB in the page cache, median of 5: `python -m
    bench --only store`)."""
    problems = [r[0] for r in conn.execute("PRAGMA quick_check(5)").fetchall()]
    if problems != ["ok"]:
        raise StoreError(damaged(path, "quick_check: " + "; ".join(problems)))


def _open(path: Path) -> sqlite3.Connection:
    try:
        path.parent.mkdir(mode=0o750, parents=True, exist_ok=True)
        # Create the file ourselves so its mode (copied by SQLite to -wal and -shm) keeps the
        # offenders' addresses and log lines away from other users.
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o640))
    except OSError as e:
        raise StoreError(
            f"cannot create or open the offenders database {path}: {e.strerror}; check that"
            f" {path.parent} is a directory and that both are writable by the applianced user"
        ) from e
    try:
        conn = sqlite3.connect(path, timeout=_BUSY_TIMEOUT, isolation_level=None)
    except sqlite3.Error as e:
        raise StoreError(_explain(path, e)) from e
    try:
        conn.execute(f"PRAGMA busy_timeout = {int(_BUSY_TIMEOUT * 1000)}")
        if conn.execute("PRAGMA journal_mode = WAL").fetchone()[0] != "wal":
            raise StoreError(f"{path}: SQLite refused WAL mode; is it on a network filesystem?")
        # NORMAL, in WAL mode: a commit is in the WAL file when it returns, so it survives any
        # crash of the process (SIGKILL, OOM); only a power cut or kernel crash can lose the
        # last commits before the next checkpoint's fsync, and that takes the kernel's sets
        # with it. FULL fsyncs every commit: 4.1 ms against 2.3 ms for a 100-ban batch here,
        # once per reactor turn of a storm, on the path between two batches of bans.
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA foreign_keys = ON")
        _check(conn, path)
        migrate(conn, path)
    except sqlite3.Error as e:
        conn.close()
        raise StoreError(_explain(path, e)) from e
    except BaseException:
        conn.close()
        raise
    return conn


class SqliteOffenderStore:
    """The OffenderStore in one SQLite file (WAL, synchronous=NORMAL). Not thread-safe: use it
    from the reactor thread only. Each write is one BEGIN IMMEDIATE ... COMMIT; each read is
    one statement, hence one (implicit) read transaction.

    ``node`` names this appliance in the rows it decides; ``journal`` (cluster mode) writes
    the outbox."""

    def __init__(
        self, path: Path, *, lines_per_ban: int = 20, node: str = "", journal: bool = False
    ) -> None:
        if lines_per_ban < 0:
            raise ValueError(f"lines_per_ban is {lines_per_ban}; it must be 0 or more")
        self.path = Path(path)
        self._lines_per_ban = lines_per_ban
        self.node = node
        self.journal = journal
        self._conn = _open(self.path)
        self._uid_prefix = self._read("SELECT store FROM cluster", ())[0][0] + "."

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        conn = self._conn
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        except sqlite3.Error as e:
            raise StoreError(_explain(self.path, e)) from e

    def _read(self, sql: str, params: Sequence[Any]) -> list[Any]:
        try:
            return self._conn.execute(sql, params).fetchall()
        except sqlite3.Error as e:
            raise StoreError(_explain(self.path, e)) from e

    def record_bans(self, decisions: Sequence[BanDecision], *, share: bool = True) -> None:
        if not decisions:
            return
        node, keep = self.node, self._lines_per_ban  # keep the most recent lines (oldest first)
        with self._write() as conn:
            # Ids chosen here (as SQLite would: max + 1) tie each ban to its lines without a
            # round trip per row; BEGIN IMMEDIATE holds the write lock, so no one else inserts.
            first_id = conn.execute("SELECT coalesce(max(id), 0) + 1 FROM bans").fetchone()[0]
            rows = [
                (
                    first_id + i,
                    d.jail,
                    str(d.network),
                    d.network.version,
                    *span(d.network),
                    d.at,
                    d.expires_at,
                    d.kind.value,
                    d.count,
                    node,
                    sender_of(d.lines),
                )
                for i, d in enumerate(decisions)
            ]
            conn.executemany(INSERT, rows)
            if keep:
                lines = [
                    (first_id + i, LINES_JSON(d.lines[-keep:]))
                    for i, d in enumerate(decisions)
                    if d.lines
                ]
                conn.executemany(INSERT_LINES, lines)
            if self.journal and share:
                ids = [(first_id + i,) for i in range(len(rows))]
                conn.executemany("INSERT INTO outbox (op, ban) VALUES ('ban', ?)", ids)

    def end_bans(self, bans: Sequence[Ban], at: float, reason: str, *, share: bool = True) -> int:
        if not bans:
            return 0
        rows = [(at, reason, b.jail, str(b.network), b.started_at) for b in bans]
        if self.journal and share and reason in _SHARED_ENDS:
            return self._end_shared(rows)
        with self._write() as conn:
            # started_at <= ?: a Ban read before another ban superseded it (by this process
            # or, with a shared backend, another appliance) must not end the newer one.
            cursor = conn.executemany(
                "UPDATE bans SET ended_at = ?, end_reason = ?"
                " WHERE jail = ? AND network = ? AND ended_at IS NULL AND started_at <= ?",
                rows,
            )
            return cursor.rowcount

    def _end_shared(self, rows: Sequence[tuple[Any, ...]]) -> int:
        """end_bans with the ended bans in the outbox, same transaction."""
        ended = 0
        with self._write() as conn:
            for row in rows:
                found = conn.execute(
                    "UPDATE bans SET ended_at = ?, end_reason = ? WHERE jail = ? AND network = ?"
                    " AND ended_at IS NULL AND started_at <= ? RETURNING id",
                    row,
                ).fetchall()
                conn.executemany("INSERT INTO outbox (op, ban) VALUES ('end', ?)", found)
                ended += len(found)
        return ended

    # -- cluster mode: the outbox and the adoption of other appliances' changes --------------

    def pending(self, limit: int) -> list[BanEvent]:
        """Up to ``limit`` changes of this appliance not yet pushed, oldest first."""
        rows = self._read(
            f"SELECT seq, op, coalesce(uid, ? || id), node, sender, {BAN_COLUMNS}, lines,"
            " ended_at, end_reason FROM outbox JOIN bans ON id = ban"
            " LEFT JOIN ban_lines ON ban_id = id ORDER BY seq LIMIT ?",
            (self._uid_prefix, limit),
        )
        return [_event(r) for r in rows]

    def pushed(self, seq: int) -> None:
        """The outbox up to ``seq`` is in the cluster log."""
        with self._write() as conn:
            conn.execute("DELETE FROM outbox WHERE seq <= ?", (seq,))

    def backlog(self) -> int:
        """How many changes wait in the outbox."""
        return int(self._read("SELECT count(*) FROM outbox", ())[0][0])

    def cursor(self) -> int:
        """The cluster log's sequence up to which changes are adopted."""
        return int(self._read("SELECT cursor FROM cluster", ())[0][0])

    def adopt(
        self, events: Sequence[BanEvent], cursor: int, now: float
    ) -> tuple[list[Ban], list[Ban]]:
        """Record changes from the cluster log (this appliance's own included: each is
        recorded once, by uid) and move the cursor, in one transaction. Returns the bans that
        became active here and the active bans that ended. A ban older than the open one of
        its (jail, network) is recorded as superseded; one already expired, as expired."""
        started: dict[str, Ban] = {}
        ended: list[Ban] = []
        with self._write() as conn:
            next_id = conn.execute("SELECT coalesce(max(id), 0) + 1 FROM bans").fetchone()[0]
            for e in events:
                b = e.ban
                # This store's own bans (echoed by the log) are found by row id.
                mine = e.uid.startswith(self._uid_prefix)
                where = "id = ?" if mine else "uid = ?"
                key = int(e.uid.removeprefix(self._uid_prefix)) if mine else e.uid
                if e.op == "end":
                    hit = conn.execute(
                        f"UPDATE bans SET ended_at = ?, end_reason = ? WHERE {where}"
                        " AND ended_at IS NULL RETURNING 1",
                        (e.ended_at, e.end_reason, key),
                    ).fetchall()
                    if hit and started.pop(e.uid, None) is None:
                        ended.append(b)
                    continue
                if mine or conn.execute(f"SELECT 1 FROM bans WHERE {where}", (key,)).fetchone():
                    continue
                newer = conn.execute(
                    "SELECT min(started_at) FROM bans WHERE jail = ? AND network = ?"
                    " AND ended_at IS NULL AND started_at > ?",
                    (b.jail, str(b.network), b.started_at),
                ).fetchone()[0]
                end: tuple[float | None, str | None] = (None, None)
                if newer is not None:
                    end = (newer, "superseded")
                elif b.expires_at is not None and b.expires_at <= now:
                    end = (b.expires_at, "expired")
                conn.execute(
                    "INSERT INTO bans (id, jail, network, version, first, last, started_at,"
                    " expires_at, kind, count, uid, node, sender, ended_at, end_reason)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        next_id, b.jail, str(b.network), b.network.version, *span(b.network),
                        b.started_at, b.expires_at, b.kind.value, b.count, e.uid, e.node,
                        e.sender, *end,
                    ),
                )  # fmt: skip
                if e.lines:
                    conn.execute(INSERT_LINES, (next_id, LINES_JSON(e.lines)))
                next_id += 1
                if end[0] is None:
                    started[e.uid] = b
            conn.execute("UPDATE cluster SET cursor = max(cursor, ?)", (cursor,))
        return list(started.values()), ended

    def active_bans(self, now: float) -> list[Ban]:
        return [ban_from_row(r) for r in self.active_rows(now)]

    def active_rows(self, now: float) -> list[BanRow]:
        # In the table's order (id): no sort of 100,000 rows at start; listings sort their own.
        return self._read(
            f"SELECT {BAN_COLUMNS} FROM bans WHERE ended_at IS NULL"
            " AND (expires_at IS NULL OR expires_at > ?) ORDER BY id",
            (now,),
        )

    def due_expiries(self, now: float) -> list[Ban]:
        rows = self._read(
            f"SELECT {BAN_COLUMNS} FROM bans WHERE ended_at IS NULL AND expires_at <= ?"
            " ORDER BY expires_at, id",
            (now,),
        )
        return [ban_from_row(r) for r in rows]

    def last_ends(
        self, bans: Sequence[tuple[str, IPNetwork]]
    ) -> dict[tuple[str, IPNetwork], float]:
        found = {}
        try:
            for jail, network in bans:
                # One probe of bans_net each: an exact network is its version, first and last.
                at = self._conn.execute(
                    "SELECT max(ended_at) FROM bans WHERE version = ? AND first = ? AND last = ?"
                    " AND jail = ?",
                    (network.version, *span(network), jail),
                ).fetchone()[0]
                if at is not None:
                    found[(jail, network)] = float(at)
        except sqlite3.Error as e:
            raise StoreError(_explain(self.path, e)) from e
        return found

    def find_active(self, network: IPNetwork, jail: str | None = None) -> list[Ban]:
        params = containment_params(network)
        if jail is not None:
            params.append(jail)
        rows = self._read(FIND[network.max_prefixlen, jail is not None], params)
        return [ban_from_row(r) for r in rows]

    def prior_bans(
        self, jail: str, networks: Sequence[IPNetwork], since: float
    ) -> dict[IPNetwork, int]:
        counts = dict.fromkeys(networks, 0)
        # An exact network is its (version, first, last): probes of bans_net by first, the
        # rows of wider or narrower networks with the same first address left out by last.
        by_span = {(n.version, *span(n)): n for n in counts}
        for version in (4, 6):
            firsts = list(dict.fromkeys(first for v, first, _ in by_span if v == version))
            for i in range(0, len(firsts), _IN_CHUNK):
                chunk = firsts[i : i + _IN_CHUNK]
                rows = self._read(
                    "SELECT first, last, count(*) FROM bans WHERE version = ?"
                    f" AND first IN ({', '.join('?' * len(chunk))}) AND jail = ?"
                    " AND started_at >= ? GROUP BY first, last",
                    (version, *chunk, jail, since),
                )
                for first, last, count in rows:
                    network = by_span.get((version, first, last))
                    if network is not None:
                        counts[network] = int(count)
        return counts

    def history(self, address: IPAddress | IPNetwork, limit: int = 20) -> list[BanRecord]:
        network = ip_network(address)
        params = [*containment_params(network), limit]
        rows = self._read(HISTORY[network.max_prefixlen], params)
        return [
            BanRecord(ban_from_row(r), r[6], r[7], tuple(json.loads(r[8] or "[]")), r[9], r[10])
            for r in rows
        ]

    def close(self) -> None:
        # What SQLite advises before closing; if it fails (closed, busy) only statistics are lost.
        with suppress(sqlite3.Error):
            self._conn.execute("PRAGMA optimize")
        self._conn.close()
