"""CLI figures of issue 16 ("a light CLI"): the wall time of one ``appliancectl`` process, from
its start to its exit, for ``--help`` and for ``status`` against a running daemon (every
shipped jail enabled, ``--dry-run``: the memory backend, so no namespace is needed; loopback
only). ``status`` finds the control socket through ``--config`` as an operator's does, so the
config is read too; ``status --socket`` is the same without it. Each figure is the median of
``REPEATS`` processes after ``WARMUP`` unmeasured ones (the page cache warm, as on a box in use).

Run by ``bench/__main__.py`` (``./dev bench --only cli``) as ``python -m bench.cli [APPLIANCECTL]``
(default: this venv's; another venv's to compare with an older tree); prints one JSON object
mapping a figure's name to milliseconds.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.ingest import bench_config

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tests.e2e.daemon import BIN, Daemon, free_port  # noqa: E402

REPEATS = 15
WARMUP = 3


def process_ms(argv: list[str]) -> float:
    """The median wall time of ``argv`` run REPEATS times, in ms; each must exit 0."""
    samples = []
    for i in range(WARMUP + REPEATS):
        started = time.perf_counter()
        done = subprocess.run(argv, capture_output=True, timeout=60, check=False)
        elapsed = time.perf_counter() - started
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(argv)} exited {done.returncode}:\n{done.stderr.decode()}")
        if i >= WARMUP:
            samples.append(elapsed * 1000)
    return statistics.median(samples)


def main(ctl: str) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        d = Daemon(workdir, bench_config(free_port(), workdir)).start()
        try:
            return {
                "help": process_ms([ctl, "--help"]),
                "status": process_ms([ctl, "--config", str(d.config), "status"]),
                "status_socket": process_ms([ctl, "--socket", str(d.socket), "status"]),
            }
        finally:
            d.stop()


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1] if len(sys.argv) > 1 else str(BIN / "appliancectl"))))
