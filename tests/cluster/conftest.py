"""One private PostgreSQL server (tests/pg.py) for the tests of this directory that need one,
started once per test process: each start is an initdb, seconds of CPU. The tests share it, so
each keeps to its own rows (node names, uids, addresses) or puts back what it changed."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.pg import PgServer, pg_server


@pytest.fixture(scope="session")
def pg() -> Iterator[PgServer]:
    with pg_server() as server:
        yield server
