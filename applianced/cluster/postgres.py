"""The cluster log in PostgreSQL: its schema and migrations, and every query cluster mode makes.

ARCHITECTURE. In cluster mode the appliances share one database. ``bans`` holds every ban any of
them decided (keyed by the ban's global uid, with its origin node and sender); ``events`` is the
change log (a ban, or its end by an operator) that appliances read by sequence; ``nodes`` holds
each appliance's heartbeat. A push takes a transaction-scoped advisory lock before it draws
sequence numbers, so sequences commit in order and a reader that has seen ``seq`` has seen every
change below it; a push is idempotent (a replayed ban or end adds no row and no event). Each push
ends with ``NOTIFY applianced`` so the others read at once. With ``share_failures``,
``failures`` holds the failures each appliance counted (transient: a push appends a batch, prunes
rows older than ``FAILURES_KEEP`` and notifies on the same channel; readers follow it by id from
the newest row at their connection, under a lock of its own so ids also commit in order).
Everything here blocks: the
replicator calls it from threads, never from the reactor, and appliancectl's cluster verbs
(``cli/cluster.py``: ``check --connect``, ``cluster forget``) call it directly; it imports no
Twisted. Connections: ``connect_args`` builds them from ``[state]`` (``LIVENESS``: a dead path
is found in seconds; the password from a file or the environment, never in the DSN or a log).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict

from applianced.conf.schema import StateConf
from applianced.errors import ApplianceError
from applianced.rules.addresses import parse_address, parse_network
from applianced.rules.decision import Ban, BanKind
from applianced.rules.engine import CountedFailure
from applianced.store.base import BanEvent

__all__ = ["CHANNEL", "FAILURES_KEEP", "LIVENESS", "ClusterSchemaError", "connect_args",
           "describe", "fetch", "fetch_failures", "forget", "heartbeat", "last_failure",
           "last_seen", "migrate", "push", "push_failures", "schema_version"]  # fmt: skip

CHANNEL = "applianced"
# libpq's options that find a dead path in seconds (TCP only; a UNIX socket ignores them): a
# connection attempt gives up after connect_timeout; an idle connection is probed after
# keepalives_idle seconds, every keepalives_interval, and dropped after keepalives_count
# unanswered probes (11 s); data unacknowledged for tcp_user_timeout ms drops it (5 s).
LIVENESS: dict[str, int] = {
    "connect_timeout": 3,
    "keepalives": 1,
    "keepalives_idle": 5,
    "keepalives_interval": 2,
    "keepalives_count": 3,
    "tcp_user_timeout": 5000,
}
PASSWORD_ENV = "APPLIANCED_DB_PASSWORD"
FAILURES_KEEP = 600.0  # seconds a shared failure stays in the table (readers take it at once)
_LOCK = 0x41504C44  # pg_advisory_xact_lock key: "APLD", for migrations and pushes
_FAILURES_LOCK = 0x41504C46  # "APLF": failure pushes, apart from ban pushes

# Ordered migrations: _MIGRATIONS[n - 1] takes version n - 1 to n. Append only.
_MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE bans (
            uid        text PRIMARY KEY,
            node       text NOT NULL,              -- the appliance that decided it
            sender     text NOT NULL,              -- syslog sender of its last line
            jail       text NOT NULL,
            network    text NOT NULL,              -- canonical CIDR, as in the local store
            started_at double precision NOT NULL,  -- POSIX seconds, UTC
            expires_at double precision,           -- NULL: permanent
            kind       text NOT NULL,
            count      integer NOT NULL,
            lines      jsonb NOT NULL,
            ended_at   double precision,           -- set by an operator's unban or flush
            end_reason text
        )""",
        """CREATE TABLE events (
            seq  bigserial PRIMARY KEY,
            op   text NOT NULL CHECK (op IN ('ban', 'end')),
            uid  text NOT NULL REFERENCES bans (uid),
            node text NOT NULL,                    -- the appliance that made the change
            at   timestamptz NOT NULL DEFAULT now()
        )""",
        """CREATE TABLE nodes (
            name      text PRIMARY KEY,
            last_seen timestamptz NOT NULL,
            backlog   integer NOT NULL,            -- its changes not yet pushed
            version   text NOT NULL
        )""",
    ),
    (
        """CREATE TABLE failures (
            id     bigserial PRIMARY KEY,
            node   text NOT NULL,                  -- the appliance that counted it
            jail   text NOT NULL,
            key    text NOT NULL,                  -- the address, or address/prefix (<CIDR>)
            at     double precision NOT NULL,      -- its receipt there, POSIX seconds
            line   text NOT NULL,
            sender text NOT NULL
        )""",
        "CREATE INDEX failures_at ON failures (at)",
    ),
)

_FETCH = (
    "SELECT e.seq, e.op, b.uid, b.node, b.sender, b.jail, b.network, b.started_at,"
    " b.expires_at, b.kind, b.count, b.lines, b.ended_at, b.end_reason"
    " FROM events e JOIN bans b USING (uid) WHERE e.seq > %s ORDER BY e.seq LIMIT %s"
)


class ClusterSchemaError(ApplianceError):
    """The database holds a schema this applianced cannot use."""


def connect_args(conf: StateConf) -> dict[str, Any]:
    """``psycopg.connect`` keyword arguments for ``[state]``: the DSN, ``LIVENESS`` where the
    DSN does not say otherwise, and the password from ``password_file`` or
    ``$APPLIANCED_DB_PASSWORD`` when either is there."""
    given = conninfo_to_dict(conf.dsn)
    args: dict[str, Any] = {
        "conninfo": conf.dsn,
        "application_name": f"applianced {conf.node}",
        **{key: value for key, value in LIVENESS.items() if key not in given},
    }
    if conf.password_file is not None:
        try:
            args["password"] = conf.password_file.read_text().strip()
        except OSError as e:
            raise ApplianceError(
                f"cannot read the database password file {conf.password_file}: {e.strerror};"
                " it must be readable by the applianced user"
            ) from None
    elif os.environ.get(PASSWORD_ENV):
        args["password"] = os.environ[PASSWORD_ENV]
    return args


def describe(dsn: str) -> str:
    """The database as logs may name it: user@host:port/dbname, never a password."""
    p = conninfo_to_dict(dsn)
    host = str(p.get("host", "localhost"))
    return f"{p.get('user', '')}@{host}:{p.get('port', 5432)}/{p.get('dbname', '')}".lstrip("@")


def schema_version(conn: psycopg.Connection[Any]) -> tuple[int, int]:
    """The database's schema version (0: no appliance has connected yet) and this applianced's
    latest; ``check --connect`` compares them."""
    row = conn.execute("SELECT to_regclass('applianced_schema') IS NOT NULL").fetchone()
    if not row or not row[0]:
        return 0, len(_MIGRATIONS)
    row = conn.execute("SELECT coalesce(max(version), 0) FROM applianced_schema").fetchone()
    return (int(row[0]) if row else 0), len(_MIGRATIONS)


def migrate(conn: psycopg.Connection[Any]) -> None:
    """Bring the schema to the latest version, one appliance at a time, or refuse it."""
    latest = len(_MIGRATIONS)
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK,))
        conn.execute("CREATE TABLE IF NOT EXISTS applianced_schema (version integer NOT NULL)")
        row = conn.execute("SELECT max(version) FROM applianced_schema").fetchone()
        version = int(row[0]) if row and row[0] is not None else 0
        if version > latest:
            raise ClusterSchemaError(
                f"the cluster database has schema version {version}, this applianced knows 1"
                f" to {latest}: upgrade this appliance to the cluster's version"
            )
        for number in range(version + 1, latest + 1):
            for statement in _MIGRATIONS[number - 1]:
                conn.execute(statement)
            conn.execute("INSERT INTO applianced_schema VALUES (%s)", (number,))


def push(conn: psycopg.Connection[Any], events: Sequence[BanEvent], node: str) -> int:
    """Write this appliance's changes to the log in one transaction and notify the others.
    Changes already there (a replay after a crash) are skipped. Returns how many were new."""
    new = 0
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK,))
        for e in events:
            b = e.ban
            if e.op == "ban":
                done = conn.execute(
                    "INSERT INTO bans (uid, node, sender, jail, network, started_at, expires_at,"
                    " kind, count, lines) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
                    " ON CONFLICT (uid) DO NOTHING RETURNING 1",
                    (e.uid, e.node, e.sender, b.jail, str(b.network), b.started_at,
                     b.expires_at, b.kind.value, b.count, json.dumps(list(e.lines))),
                ).fetchone()  # fmt: skip
            else:
                done = conn.execute(
                    "UPDATE bans SET ended_at = %s, end_reason = %s"
                    " WHERE uid = %s AND ended_at IS NULL RETURNING 1",
                    (e.ended_at, e.end_reason, e.uid),
                ).fetchone()
            if done:
                conn.execute(
                    "INSERT INTO events (op, uid, node) VALUES (%s, %s, %s)", (e.op, e.uid, node)
                )
                new += 1
        if new:
            conn.execute(f"NOTIFY {CHANNEL}")
    return new


def fetch(conn: psycopg.Connection[Any], after: int, limit: int) -> list[BanEvent]:
    """Up to ``limit`` changes of the log after sequence ``after``, in order."""
    rows = conn.execute(_FETCH, (after, limit)).fetchall()
    return [
        BanEvent(
            seq=r[0],
            op=r[1],
            uid=r[2],
            node=r[3],
            sender=r[4],
            ban=Ban(r[5], parse_network(r[6]), r[7], r[8], BanKind(r[9]), r[10]),
            lines=tuple(r[11]),
            ended_at=r[12] if r[1] == "end" else None,
            end_reason=r[13] if r[1] == "end" else None,
        )
        for r in rows
    ]


def push_failures(
    conn: psycopg.Connection[Any], failures: Sequence[CountedFailure], node: str
) -> None:
    """Append this appliance's counted failures in one transaction, prune the old ones,
    notify the others."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_FAILURES_LOCK,))
        with conn.cursor().copy(
            "COPY failures (node, jail, key, at, line, sender) FROM STDIN"
        ) as copy:
            for f in failures:
                key = str(f.address) if f.prefix is None else f"{f.address}/{f.prefix}"
                copy.write_row((node, f.jail, key, f.at, f.line, f.sender))
        conn.execute(
            "DELETE FROM failures WHERE at < extract(epoch FROM now()) - %s", (FAILURES_KEEP,)
        )
        conn.execute(f"NOTIFY {CHANNEL}")


def last_failure(conn: psycopg.Connection[Any]) -> int:
    """The newest failure's id: where a reader starts (older failures are not replayed)."""
    row = conn.execute("SELECT coalesce(max(id), 0) FROM failures").fetchone()
    return int(row[0]) if row else 0


def fetch_failures(
    conn: psycopg.Connection[Any], after: int, node: str, limit: int
) -> tuple[int, list[CountedFailure]]:
    """The id read up to, and up to ``limit`` failures after ``after`` counted by appliances
    other than ``node`` (its own are never read back), in order."""
    rows = conn.execute(
        "SELECT id, node, jail, key, at, line, sender FROM failures WHERE id > %s"
        " ORDER BY id LIMIT %s",
        (after, limit),
    ).fetchall()
    failures = []
    for r in rows:
        if r[1] == node:
            continue
        address, _, prefix = str(r[3]).partition("/")
        failures.append(
            CountedFailure(r[2], parse_address(address), int(prefix) if prefix else None,
                           r[5], r[4], r[6])
        )  # fmt: skip
    return (rows[-1][0] if rows else after), failures


def heartbeat(
    conn: psycopg.Connection[Any], node: str, backlog: int, version: str
) -> list[dict[str, Any]]:
    """Record that ``node`` is alive; every node's last heartbeat (seconds ago, by the
    database's clock) and backlog."""
    conn.execute(
        "INSERT INTO nodes (name, last_seen, backlog, version) VALUES (%s, now(), %s, %s)"
        " ON CONFLICT (name) DO UPDATE SET last_seen = now(), backlog = EXCLUDED.backlog,"
        " version = EXCLUDED.version",
        (node, backlog, version),
    )
    rows = conn.execute(
        "SELECT name, extract(epoch FROM last_seen)::float8,"
        " extract(epoch FROM now() - last_seen)::float8, backlog, version"
        " FROM nodes ORDER BY name"
    ).fetchall()
    return [
        {"name": r[0], "last_seen": r[1], "age": r[2], "backlog": r[3], "version": r[4]}
        for r in rows
    ]


def forget(conn: psycopg.Connection[Any], node: str) -> dict[str, int]:
    """Retire ``node`` from the shared schema: its heartbeat row and the failures it shared
    (its node-scoped state). The bans it decided stay: they are the cluster's, and the log
    keeps who decided them. Returns the rows deleted per table."""
    with conn.transaction():
        nodes = conn.execute("DELETE FROM nodes WHERE name = %s", (node,)).rowcount
        failures = conn.execute("DELETE FROM failures WHERE node = %s", (node,)).rowcount
    return {"nodes": nodes, "failures": failures}


def last_seen(conn: psycopg.Connection[Any]) -> dict[str, float]:
    """Every node's last heartbeat, in seconds ago by the database's clock."""
    rows = conn.execute(
        "SELECT name, extract(epoch FROM now() - last_seen)::float8 FROM nodes ORDER BY name"
    ).fetchall()
    return {str(r[0]): float(r[1]) for r in rows}
