"""``./dev bench``: run the benchmarks and print a table of figures (median, min, max over
runs). Benchmarks print figures; they assert nothing.

The kernel benchmarks run in a network namespace created here and deleted afterwards, so the
host's own ruleset is never touched. Needs root (for ``ip netns``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def run_in_namespace(module: str, *args: str) -> dict[str, Any]:
    name = f"appl-bench-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        done = subprocess.run(
            ["ip", "netns", "exec", name, sys.executable, "-m", module, *args],
            cwd=ROOT, capture_output=True, text=True, timeout=900, check=False,
        )  # fmt: skip
        if done.returncode != 0:
            raise SystemExit(f"{module} failed:\n{done.stderr}")
        return dict(json.loads(done.stdout.strip().splitlines()[-1]))
    finally:
        subprocess.run(["ip", "netns", "delete", name], check=False)


def row(name: str, values: Sequence[float], unit: str, target: str) -> str:
    med, lo, hi = statistics.median(values), min(values), max(values)
    return f"| {name} | {med:,.2f} | {lo:,.2f} | {hi:,.2f} | {unit} | {target} |"


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="./dev bench", description=__doc__)
    p.add_argument("--runs", type=int, default=3, help="runs per figure (default 3)")
    p.add_argument("--latency-samples", type=int, default=300)
    p.add_argument("--only", choices=("filters", "kernel"), help="run one section only")
    p.add_argument("--lines", type=int, default=1_000_000, help="lines of the filters' log")
    args = p.parse_args(argv)
    if args.only != "kernel":
        filters(args.runs, args.lines)
    if args.only != "filters":
        kernel(args)
    return 0


def filters(runs: int, lines: int) -> None:
    """Lines/s of test-filter per shipped filter, all jails, a fail2ban filter (filters.py)."""
    results = []
    for _ in range(runs):
        done = subprocess.run(
            [sys.executable, "-m", "bench.filters", str(lines)],
            cwd=ROOT, capture_output=True, text=True, timeout=3600, check=False,
        )  # fmt: skip
        if done.returncode != 0:
            raise SystemExit(f"bench.filters failed:\n{done.stderr}")
        results.append(json.loads(done.stdout.strip().splitlines()[-1])["lines_per_s"])
    print(f"filter benchmarks, test-filter on a {lines:,}-line mail log, {runs} runs")
    print("| figure | median | min | max | unit | target |")
    print("|---|---|---|---|---|---|")
    for name in results[0]:
        values = [r[name] for r in results if r[name] is not None]
        if values:
            print(row(name, values, "lines/s", ""))
    print()


def kernel(args: argparse.Namespace) -> None:
    runs = [run_in_namespace("bench.kernel", str(args.latency_samples)) for _ in range(args.runs)]
    print(f"kernel benchmarks, {args.runs} runs (median / min / max)")
    print("| figure | median | min | max | unit | target |")
    print("|---|---|---|---|---|---|")
    print(row("restore 100,000 bans at start", [r["restore_100k_s"] for r in runs], "s", "< 2 s"))
    print(row("burst: 10,000 addresses cross maxretry",
              [r["burst_bans_per_s"] for r in runs], "bans/s", ">= 20,000"))  # fmt: skip
    print(row("latency receipt -> kernel, median",
              [r["latency_ms"]["median"] for r in runs], "ms", ""))  # fmt: skip
    print(row("latency receipt -> kernel, p99",
              [r["latency_ms"]["p99"] for r in runs], "ms", "< 10 ms"))  # fmt: skip


if __name__ == "__main__":
    raise SystemExit(main())
