"""The offenders database's schema, as ordered migrations, and the one function that applies them.

ARCHITECTURE. ``store/sqlite.py`` calls ``migrate`` when it opens the file; nothing else does.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from applianced.errors import StoreError

__all__ = ["APPLICATION_ID", "MIGRATIONS", "migrate"]

APPLICATION_ID = 0x41504C44  # "APLD" in the file header: this file is an offenders store

# Ordered migrations: MIGRATIONS[n - 1] takes user_version n - 1 to n. Append only; never edit
# one that has shipped.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (  # 1: the initial schema
        """CREATE TABLE bans (
            id         INTEGER PRIMARY KEY,
            jail       TEXT    NOT NULL,
            network    TEXT    NOT NULL,             -- str(ip_network(...)), canonical
            version    INTEGER NOT NULL CHECK (version IN (4, 6)),
            first      BLOB    NOT NULL,             -- network address, big-endian
            last       BLOB    NOT NULL,             -- last address, same width
            started_at REAL    NOT NULL,             -- POSIX seconds, UTC
            expires_at REAL,                         -- NULL: permanent
            kind       TEXT    NOT NULL,             -- BanKind value
            count      INTEGER NOT NULL,             -- rank of this ban for (jail, network)
            ended_at   REAL,                         -- NULL: not ended
            end_reason TEXT,                         -- "unban", "expired", "superseded"...
            CHECK (length(first) = length(last)
                   AND length(first) = CASE version WHEN 4 THEN 4 ELSE 16 END),
            CHECK ((ended_at IS NULL) = (end_reason IS NULL))
        )""",
        # Apart from bans, so that scans of bans stay on small rows; only history reads them.
        """CREATE TABLE ban_lines (
            ban_id INTEGER PRIMARY KEY REFERENCES bans (id) ON DELETE CASCADE,
            lines  TEXT    NOT NULL                  -- JSON array of matched lines, oldest first
        )""",
        # active_bans and due_expiries: only rows not ended, ordered by expiry.
        "CREATE INDEX bans_open ON bans (expires_at) WHERE ended_at IS NULL",
        # At most one ban not ended per (jail, network), as in the kernel sets; end_bans.
        "CREATE UNIQUE INDEX bans_one_open ON bans (jail, network) WHERE ended_at IS NULL",
        # A new ban supersedes the open one of its (jail, network), in the same statement.
        """CREATE TRIGGER bans_supersede BEFORE INSERT ON bans BEGIN
            UPDATE bans SET ended_at = NEW.started_at, end_reason = 'superseded'
            WHERE jail = NEW.jail AND network = NEW.network AND ended_at IS NULL;
        END""",
        # prior_bans (until migration 3).
        "CREATE INDEX bans_prior ON bans (jail, network, started_at)",
        # find_active and history: see store/queries.containing; prior_bans (from migration 3).
        "CREATE INDEX bans_net ON bans (version, first, last)",
        f"PRAGMA application_id = {APPLICATION_ID}",
    ),
    (  # 2: cluster mode: global ids, origin node and sender; the outbox; the log's cursor
        "ALTER TABLE bans ADD COLUMN uid TEXT",
        "ALTER TABLE bans ADD COLUMN node TEXT NOT NULL DEFAULT ''",
        "ALTER TABLE bans ADD COLUMN sender TEXT NOT NULL DEFAULT ''",
        # A ban's global uid: "<store id>.<row id>" for the bans of this store (uid NULL, so
        # recording a ban costs no index insert), the origin's uid for other appliances' bans.
        """CREATE TABLE cluster (
            one    INTEGER PRIMARY KEY CHECK (one = 1),
            store  TEXT    NOT NULL,
            cursor INTEGER NOT NULL              -- the cluster log's sequence adopted up to
        )""",
        "INSERT INTO cluster VALUES (1, lower(hex(randomblob(8))), 0)",
        "CREATE UNIQUE INDEX bans_uid ON bans (uid) WHERE uid IS NOT NULL",
        # A ban recorded already ended (a remote one older than the open one) supersedes nothing.
        "DROP TRIGGER bans_supersede",
        """CREATE TRIGGER bans_supersede BEFORE INSERT ON bans WHEN NEW.ended_at IS NULL BEGIN
            UPDATE bans SET ended_at = NEW.started_at, end_reason = 'superseded'
            WHERE jail = NEW.jail AND network = NEW.network AND ended_at IS NULL;
        END""",
        # Changes of this appliance not yet in the cluster log, in order.
        """CREATE TABLE outbox (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            op  TEXT    NOT NULL CHECK (op IN ('ban', 'end')),
            ban INTEGER NOT NULL                -- bans.id
        )""",
    ),
    (  # 3: prior_bans reads bans_net (an exact network is its version, first and last), so
        # that recording a ban updates one index fewer (~5 us a ban of a storm's batch)
        "DROP INDEX bans_prior",
    ),
)


def migrate(conn: sqlite3.Connection, path: Path) -> None:
    """Bring the schema to the latest version in one transaction, or refuse the file."""
    latest = len(MIGRATIONS)
    conn.execute("BEGIN IMMEDIATE")  # taken before reading the version: two openers serialise
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        app_id = conn.execute("PRAGMA application_id").fetchone()[0]
        foreign = version == 0 and conn.execute("SELECT count(*) FROM sqlite_schema").fetchone()[0]
        if foreign or (version and app_id != APPLICATION_ID):
            raise StoreError(
                f"{path} is a SQLite database but not an applianced offenders store;"
                " check the configured path"
            )
        if version > latest:
            raise StoreError(
                f"{path} has schema version {version}, but this applianced knows versions 1 to"
                f" {latest}: it was written by a newer applianced; upgrade applianced, or"
                " restore a backup made by this version"
            )
        for number in range(version + 1, latest + 1):
            for statement in MIGRATIONS[number - 1]:
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {number}")
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
