"""A damaged offenders store replaced by a new one holding every ban that can still be read.

``appliancectl store recover`` (``cli/store.py``) calls ``recover`` with applianced stopped:
the damaged file (and its ``-wal``, ``-shm``) is moved aside, never deleted; a new store is
created at the same path; the bans, their matched lines, the cluster cursor and the outbox
are copied from the damaged file by ranges of row ids, a range SQLite cannot read split in
halves until each unreadable row stands alone and is skipped. What the kernel holds and the
new store lacks is adopted by the next start (``recovery.py``). SQL of its own, as
``store/sqlite.py``'s.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from applianced.errors import StoreError
from applianced.store.sqlite import SqliteOffenderStore

__all__ = ["Recovered", "recover"]

_CHUNK = 1000  # row ids read per query
_MAX_CHUNKS = 1_000_000  # a bound on the walk over a damaged table: a billion ids
_BAN_COLUMNS = (
    "id, jail, network, version, first, last, started_at, expires_at, kind, count, ended_at,"
    " end_reason, uid, node, sender"
)


@dataclass(frozen=True, slots=True)
class Recovered:
    """What ``recover`` did: where the damaged file went, what it copied, what it lost.
    ``unreadable``: the bans not copied (bans are never deleted, so every id up to the largest
    is one: those SQLite refused and those a damaged page lost without an error);
    ``unreadable_tables``: the tables SQLite could not read at all (every one of them when
    the file is no database)."""

    aside: Path
    bans: int
    active: int
    lines: int
    unreadable: int
    unreadable_tables: tuple[str, ...] = ()


def recover(path: Path, stamp: str) -> Recovered:
    """Move ``path`` aside as ``path.damaged-STAMP`` and build a new store at ``path`` from
    what can be read of it."""
    aside = path.with_name(f"{path.name}.damaged-{stamp}")
    if not path.exists():
        raise StoreError(f"{path} does not exist; there is nothing to recover")
    if aside.exists():
        raise StoreError(f"{aside} exists already; move it away first")
    for suffix in ("", "-wal", "-shm"):
        if Path(f"{path}{suffix}").exists():
            Path(f"{path}{suffix}").rename(f"{aside}{suffix}")
    try:
        SqliteOffenderStore(path).close()  # the new store, empty, at the latest schema
        old = sqlite3.connect(f"file:{aside}?mode=ro", uri=True)
        new = sqlite3.connect(path, isolation_level=None)
        try:
            return _copy(old, new, aside)
        finally:
            old.close()
            new.close()
    except (StoreError, sqlite3.Error) as e:
        raise StoreError(
            f"{e}; the damaged store is {aside} (kept): once that is fixed, remove the new "
            f"{path.name} if there is one, move it back to {path.name} and run `appliancectl "
            "store recover` again"
        ) from None


def _copy(old: sqlite3.Connection, new: sqlite3.Connection, aside: Path) -> Recovered:
    bans, walked = _readable(old, "bans", "id", _BAN_COLUMNS)
    ids = {row[0] for row in bans}
    lines, lines_walked = _readable(old, "ban_lines", "ban_id", "ban_id, lines")
    outbox, outbox_walked = _readable(old, "outbox", "seq", "seq, op, ban")
    try:
        cluster, cluster_read = old.execute("SELECT store, cursor FROM cluster").fetchone(), True
    except sqlite3.Error:
        cluster, cluster_read = None, False
    new.execute("BEGIN IMMEDIATE")
    # In id order, as written: a ban's superseding trigger sees the bans it supersedes.
    new.executemany(
        f"INSERT OR IGNORE INTO bans ({_BAN_COLUMNS}) VALUES ({', '.join('?' * 15)})", bans
    )
    new.executemany(
        "INSERT OR IGNORE INTO ban_lines (ban_id, lines) VALUES (?, ?)",
        [r for r in lines if r[0] in ids],
    )
    new.executemany(
        "INSERT INTO outbox (seq, op, ban) VALUES (?, ?, ?)", [r for r in outbox if r[2] in ids]
    )
    if cluster is not None:
        new.execute("UPDATE cluster SET store = ?, cursor = ?", cluster)
    new.execute("COMMIT")
    active = sum(1 for r in bans if r[10] is None)
    tables = zip(
        ("bans", "ban_lines", "outbox", "cluster"),
        (walked, lines_walked, outbox_walked, 0 if cluster_read else None),
        strict=True,
    )
    return Recovered(
        aside,
        len(bans),
        active,
        len(lines),
        max(0, (walked or 0) - len(bans)),
        tuple(name for name, t in tables if t is None),
    )


def _readable(
    conn: sqlite3.Connection, table: str, key: str, columns: str
) -> tuple[list[tuple[Any, ...]], int | None]:
    """The rows of ``table`` SQLite can read, in ``key`` order, and how many keys the walk
    covered, up to the largest (0 when the table is empty, None when SQLite cannot read the
    table at all)."""
    try:
        top = conn.execute(f"SELECT max({key}) FROM {table}").fetchone()[0] or 0
    except sqlite3.Error:
        return [], None
    sql = f"SELECT {columns} FROM {table} WHERE {key} BETWEEN ? AND ? ORDER BY {key}"
    after = f"SELECT min({key}) FROM {table} WHERE {key} > ?"

    def read(low: int, high: int) -> list[tuple[Any, ...]]:
        return list(conn.execute(sql, (low, high)))

    rows: list[tuple[Any, ...]] = []
    low, top, walked = 1, int(top), 0
    # Chunk by chunk, jumping the gaps between ids (a damaged page may report a huge largest
    # id: walking every chunk up to it would not end); at most _MAX_CHUNKS chunks. ``walked``
    # counts the ids of the chunks read, the jumped gaps left out.
    for _ in range(_MAX_CHUNKS):
        if low > top:
            break
        high = min(low + _CHUNK - 1, top)
        rows += _split(read, low, high)
        walked += high - low + 1
        try:
            following = conn.execute(after, (high,)).fetchone()[0]
        except sqlite3.Error:
            following = high + 1
        if following is None:
            break
        low = int(following)
    return rows, walked


def _split(
    read: Callable[[int, int], Iterable[tuple[Any, ...]]], low: int, high: int
) -> list[tuple[Any, ...]]:
    """``read(low, high)``; when SQLite refuses, its halves, down to single ids skipped."""
    try:
        return list(read(low, high))
    except sqlite3.Error:
        if low == high:
            return []
    mid = (low + high) // 2
    return _split(read, low, mid) + _split(read, mid + 1, high)
