"""appliancectl's cluster verbs, straight to the database (no daemon needed): ``check
--connect`` tries it and says which step failed (DNS, TCP, TLS, authentication, schema);
``cluster forget NODE`` retires a node. Called by ``offline.cmd_check`` and the parser; the
connection options and the queries are the daemon's own (``cluster/postgres.py``, which holds
no Twisted and nothing of the daemon)."""

from __future__ import annotations

import argparse
from typing import Any

import psycopg

from applianced.cli.client import EXIT_DOWN, EXIT_REFUSED, EXIT_USAGE, CliError
from applianced.cli.offline import load
from applianced.cli.output import out
from applianced.cluster import postgres
from applianced.conf.paths import config_path
from applianced.conf.schema import Config, StateConf
from applianced.errors import ApplianceError
from applianced.units import format_duration

__all__ = ["FORGET_AFTER", "cmd_cluster", "try_database"]

FORGET_AFTER = 300.0  # seconds without a heartbeat before a node may be forgotten unforced

# What libpq says, by the step that failed, and what to do about it.
_STEPS: tuple[tuple[str, tuple[str, ...], str], ...] = (
    ("DNS", ("could not translate host name", "failed to resolve host"),
     "check the host name in `dsn` and this host's resolver"),
    ("authentication", ("password", "pg_hba.conf", "authentication", "role"),
     "check the user in `dsn`, the password file and the server's pg_hba.conf"),
    ("TLS", ("ssl", "certificate", "root.crt", "sslrootcert"),
     "check sslmode and sslrootcert= in `dsn`, and `ssl = on` with a certificate for the host"
     " name on the server"),
    ("TCP", ("connection refused", "timeout expired", "no route", "network is unreachable",
             "could not connect", "connection to server"),
     "check that the server runs and listens on that address (listen_addresses) and that"
     " the path (firewall, routes) lets port 5432 through"),
)  # fmt: skip


def _step(message: str) -> tuple[str, str]:
    low = message.lower()
    for step, needles, hint in _STEPS:
        if any(n in low for n in needles):
            return step, hint
    return "connection", "see the message above"


def _connect(state: StateConf) -> psycopg.Connection[Any]:
    where = postgres.describe(state.dsn)
    try:
        return psycopg.connect(**postgres.connect_args(state), autocommit=True)
    except psycopg.Error as e:
        message = " ".join(str(e).split())
        step, hint = _step(message)
        raise CliError(f"database {where}: {step} failed: {message}; {hint}", EXIT_DOWN,
                       "database_unreachable", {"step": step}) from None  # fmt: skip
    except ApplianceError as e:
        raise CliError(str(e), EXIT_USAGE) from None


def try_database(state: StateConf) -> str:
    """Connect as the daemon would and read the schema's version; what it found, or a
    CliError naming the step that failed."""
    where = postgres.describe(state.dsn)
    with _connect(state) as conn:
        try:
            found, known = postgres.schema_version(conn)
        except psycopg.Error as e:
            raise CliError(
                f"database {where}: schema failed: {' '.join(str(e).split())}; the role needs"
                " to read (and at the first start create) the applianced tables",
                EXIT_DOWN,
                "database_unreachable",
                {"step": "schema"},
            ) from None
    if found > known:
        raise CliError(
            f"database {where}: schema version {found} is newer than this applianced's ({known}):"
            " upgrade this appliance to the cluster's version",
            EXIT_REFUSED,
            fields={"step": "schema"},
        )
    schema = f"schema version {found}" if found else "no schema yet (created at the first start)"
    return f"database {where}: connected; {schema}"


def _cluster_config(args: argparse.Namespace) -> Config:
    config = load(config_path(args.config))
    if config.state.backend != "postgresql":
        raise CliError("[state] backend is not \"postgresql\": this appliance is not in a cluster",
                       EXIT_USAGE)  # fmt: skip
    return config


def cmd_cluster(args: argparse.Namespace) -> None:
    """``cluster forget NODE [--force]``."""
    state = _cluster_config(args).state
    node = args.node
    if node == state.node:
        raise CliError(f"{node} is this appliance ([state] node): run this on another one")
    with _connect(state) as conn:
        seen = postgres.last_seen(conn)
        if node not in seen:
            known = ", ".join(seen) or "none"
            raise CliError(f"no node {node!r} in the cluster; nodes: {known}")
        if seen[node] < FORGET_AFTER and not args.force:
            raise CliError(
                f"node {node} sent a heartbeat {format_duration(seen[node])} ago: stop it first"
                f" (or pass --force); a node forgotten while it runs comes back at its next"
                " heartbeat"
            )
        deleted = postgres.forget(conn, node)
    out(
        args,
        {"node": node, "deleted": deleted},
        lambda r: print(
            f"forgot node {node}: its heartbeat and {r['deleted']['failures']} shared failures;"
            " the bans it decided stay in force on every appliance"
        ),
    )
