"""The offenders store's start-up check: ``PRAGMA quick_check`` (what every open runs, see
``store/sqlite.py``) and a whole open of the store, on a store of 100,000 bans, each with three
matched lines, as a storm leaves it. Prints one JSON object: seconds, each the median of
``RUNS`` runs, with the file's size.
"""

from __future__ import annotations

import json
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable
from ipaddress import ip_network
from pathlib import Path

from applianced.rules.decision import BanDecision, BanKind
from applianced.store.sqlite import SqliteOffenderStore

RUNS = 5
BANS = 100_000


def build(path: Path) -> None:
    store = SqliteOffenderStore(path)
    now = time.time()
    for chunk in range(0, BANS, 1000):
        decisions = []
        for i in range(chunk, chunk + 1000):
            address = f"198.{18 + i // 65536}.{i // 256 % 256}.{i % 256}"  # 198.18.0.0/15
            line = f"[192.0.2.1] Failed password for root from {address} port 4242 ssh2"
            decisions.append(
                BanDecision("sshd", ip_network(address), 86400.0, BanKind.AUTO, 1, now, (line,) * 3)
            )
        store.record_bans(decisions)
    store.close()


def timed(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "offenders.sqlite"
        build(path)

        def quick_check() -> None:
            conn = sqlite3.connect(path)
            conn.execute("PRAGMA quick_check(5)").fetchall()
            conn.close()

        check = [timed(quick_check) for _ in range(RUNS)]
        opened = [timed(lambda: SqliteOffenderStore(path).close()) for _ in range(RUNS)]
        print(
            json.dumps(
                {
                    "quick_check_s": statistics.median(check),
                    "open_s": statistics.median(opened),
                    "size_mib": path.stat().st_size / 2**20,
                }
            )
        )


if __name__ == "__main__":
    main()
