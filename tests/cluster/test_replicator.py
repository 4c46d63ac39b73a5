"""The replicator's threads against a real PostgreSQL server (a private cluster, tests/pg.py),
with a reactor that runs what the threads hand it at once: the order in which the listening
thread announces itself; and the driver's log records, forwarded to ours."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from twisted.logger import LogLevel, capturedLogs, formatEvent

from applianced.cluster import postgres
from applianced.cluster.driverlog import DriverLog
from applianced.cluster.replicator import Replicator
from applianced.conf.schema import StateConf
from applianced.store.sqlite import SqliteOffenderStore
from tests.pg import PgServer, pg_missing

pytestmark = pytest.mark.skipif(pg_missing() is not None, reason=str(pg_missing()))


class InlineReactor:
    """What the replicator's threads call on the reactor, run on the calling thread."""

    def callFromThread(self, f: Callable[..., Any], *args: Any) -> None:
        f(*args)

    def seconds(self) -> float:
        return 0.0


def test_connected_is_announced_only_once_the_failure_cursor_is_read(
    pg: PgServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """share_failures: a peer's failures pushed after this appliance says it is connected are
    read by it, so its failure cursor must be taken before it says so (the flaky
    test_shared_failures_two_on_a_and_one_on_b_ban_everywhere: the failures pushed in between
    were never read)."""
    store = SqliteOffenderStore(tmp_path / "o.sqlite", node="alpha", journal=True)
    args = postgres.connect_args(StateConf("postgresql", pg.dsn, pg.password_file, "alpha"))
    replicator = Replicator(store, lambda *_: None, args, InlineReactor(), counted=lambda _: None)
    seen: list[bool] = []
    read = postgres.last_failure

    def last_failure(conn: Any) -> int:
        seen.append(replicator.state.connected)
        replicator._stop.set()  # one pass is enough
        return read(conn)

    monkeypatch.setattr(postgres, "last_failure", last_failure)
    replicator._listen(0)
    assert seen == [False]
    store.close()


def test_the_drivers_log_records_are_our_log_events_at_their_level() -> None:
    handler = DriverLog()
    handler.install()
    try:
        with capturedLogs() as events:
            logging.getLogger("psycopg").warning("error ignored on %s:\n %s", "conn", "gone")
    finally:
        handler.uninstall()
    (event,) = events
    assert event["log_level"] == LogLevel.warn
    assert event["log_namespace"] == "applianced.cluster.driver"
    assert formatEvent(event) == "psycopg: error ignored on conn: gone"
