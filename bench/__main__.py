"""``./dev bench`` (``make bench``): run the benchmarks and print one table of figures, each the
median, min and max over ``--runs`` runs, with the issue's target and, where fail2ban does the
same work in the same run, fail2ban's figure and how many times better ours is. Benchmarks
print figures; they assert nothing.

Sections (``--only`` runs one): filters (bench/filters.py, fail2ban-regex beside test-filter),
ingest (bench/ingest.py), edge (bench/edge.py, one message's way through the receiver's edge
and the jails, in process), kernel (bench/kernel.py in-process, bench/live.py the real daemon,
bench/f2b_live.py fail2ban-server measured the same way, bench/flood.py the real daemon under
forged UDP floods), memory (bench/memory.py), cli (bench/cli.py, appliancectl's start-up),
stream (bench/stream.py, a CrowdSec bouncer's startup and delta pulls of the decision stream),
store (bench/store.py, the offenders store's integrity check at open), parse
(bench/parse.py, the parser's cost per message for each forwarder's shape), scrape
(bench/scrape.py, the kernel listing behind metrics scrapes at 100,000 bans). The
kernel sections run in a network namespace created here and deleted afterwards, so the host's own
ruleset is never touched. Needs root (``ip netns``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.f2b_live import pylib

ROOT = Path(__file__).resolve().parents[1]
SECTIONS = (
    "filters",
    "ingest",
    "edge",
    "kernel",
    "memory",
    "cli",
    "stream",
    "store",
    "parse",
    "scrape",
)
F2B_LATENCY_SAMPLES = 100  # fail2ban bans ~80 a second: 50 a second for 2 s, not 6


@dataclass(frozen=True)
class Row:
    name: str
    values: list[float]
    unit: str
    target: str = ""
    fail2ban: str = ""
    ratio: str = ""


def run_in_namespace(module: str, *args: str) -> dict[str, Any]:
    name = f"appl-bench-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        return run(["ip", "netns", "exec", name, sys.executable, "-m", module, *args])
    finally:
        subprocess.run(["ip", "netns", "delete", name], check=False)


def run(argv: list[str]) -> dict[str, Any]:
    """Run one benchmark process; its last line of output is a JSON object."""
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=3600, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed:\n{done.stderr[-3000:]}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def module(name: str, *args: str) -> dict[str, Any]:
    return run([sys.executable, "-m", name, *args])


def repeat(what: str, runs: int, once: Callable[[], dict[str, Any]]) -> list[dict[str, Any]]:
    results = []
    for i in range(runs):
        started = time.monotonic()
        results.append(once())
        print(
            f"bench: {what} run {i + 1}/{runs}: {time.monotonic() - started:.0f} s",
            file=sys.stderr,
            flush=True,
        )
    return results


def times(ours: float, theirs: float) -> str:
    return f"{ours / theirs:,.1f}x"


def filters(args: argparse.Namespace) -> list[Row]:
    runs = repeat(
        "filters", args.runs, lambda: module("bench.filters", str(args.lines), str(args.f2b_lines))
    )
    rows = []
    for name in runs[0]["ours"]:
        ours = [r["ours"][name] for r in runs]
        theirs = [r["fail2ban"][name] for r in runs if r["fail2ban"].get(name) is not None]
        target = "≥ 10x fail2ban" if theirs else ""
        f2b = ratio = ""
        if theirs:
            f2b, ratio = (
                f"{statistics.median(theirs):,.0f}",
                times(statistics.median(ours), statistics.median(theirs)),
            )
        if name == "all shipped jails":
            target = "≥ 5x one fail2ban filter (its fastest)"
        elif name.startswith("Debian"):
            target = ""
        elif not theirs:
            f2b = "none shipped"
        rows.append(Row(f"filter {name}", ours, "lines/s", target, f2b, ratio))
    return rows


def ingest(args: argparse.Namespace) -> list[Row]:
    runs = repeat("ingest", args.runs, lambda: module("bench.ingest"))
    return [
        Row(
            f"ingest {t.upper()}, highest rate with < 0.1% loss",
            [r[t] for r in runs],
            "msgs/s",
            "≥ 100,000",
        )
        for t in ("udp", "tcp")
    ]


def edge(args: argparse.Namespace) -> list[Row]:
    runs = repeat("edge", args.runs, lambda: module("bench.edge"))
    return [
        Row(
            "edge: a message through gate, parse, sender count and every jail, in process",
            [r["ns_per_message"] for r in runs],
            "ns/msg",
        )
    ]


def kernel(args: argparse.Namespace) -> list[Row]:
    samples = str(args.latency_samples)
    inproc = repeat(
        "kernel (in-process)", args.runs, lambda: run_in_namespace("bench.kernel", samples)
    )
    live = repeat("kernel (daemon)", args.runs, lambda: run_in_namespace("bench.live", samples))
    pylib()  # fetched here: the namespace has no network
    f2b_samples = str(min(args.latency_samples, F2B_LATENCY_SAMPLES))
    f2b = repeat(
        "kernel (fail2ban-server)", args.runs,
        lambda: run_in_namespace("bench.f2b_live", f2b_samples),
    )  # fmt: skip
    rows = []
    for q in ("median", "p99"):
        ours = statistics.median(r["latency_ms"][q] for r in live)
        theirs = statistics.median(r["latency_ms"][q] for r in f2b)
        rows.append(
            Row(
                f"latency deciding message -> element in kernel, {q} (daemon, 1,000 msgs/s)",
                [r["latency_ms"][q] for r in live],
                "ms",
                "p99 < 10 ms" if q == "p99" else "",
                f"{theirs:,.0f} ms",
                times(theirs, ours),
            )
        )
    rows.append(
        Row(
            "latency send -> transaction return, p99 (in-process, no load)",
            [r["latency_ms"]["p99"] for r in inproc],
            "ms",
        )
    )
    after = [r["burst"]["after_last_s"] for r in live]
    rate = [r["burst"]["bans_per_s"] for r in live]
    f2b_rate = statistics.median(r["burst_bans_per_s"] for r in f2b)
    rows += [
        Row("burst 10,000: last deciding message -> all in kernel (daemon)", after, "s", "< 0.5 s"),
        Row(
            "burst 10,000: first deciding message -> all in kernel (daemon)",
            rate,
            "bans/s",
            "≥ 20,000",
            f"{f2b_rate:,.0f} (burst of 1,000)",
            times(statistics.median(rate), f2b_rate),
        ),
        Row(
            "burst 10,000 in one turn: first failure -> kernel returns (in-process)",
            [r["burst_bans_per_s"]["kernel"] for r in inproc],
            "bans/s",
            "≥ 20,000",
        ),
        Row(
            "burst 10,000 in one turn: all crossed maxretry -> kernel returns (in-process)",
            [r["burst_bans_per_s"]["applied"] for r in inproc],
            "bans/s",
            "",
        ),
        Row(
            "burst 10,000 in one turn: first failure -> store committed (in-process)",
            [r["burst_bans_per_s"]["turn"] for r in inproc],
            "bans/s",
            "",
        ),
        Row(
            "restore 100,000 bans: daemon start -> listeners open, all in kernel",
            [r["restore_s"] for r in live],
            "s",
            "< 2 s",
        ),
        Row(
            "restore 100,000 bans: Appliance.start() (in-process)",
            [r["restore_100k_s"] for r in inproc],
            "s",
            "< 2 s",
        ),
        Row(
            "restart over 100,000 bans in the kernel: Appliance.start() (their listing included)",
            [r["restart_100k_s"] for r in inproc],
            "s",
        ),
    ]
    for kind, what in (("v4", "an IPv4 address"), ("v6_64", "an IPv6 /64")):
        for fill, where in (
            ("empty", "no ban in place"),
            ("prefixes_100k", "100,000 /64 bans in place"),
        ):
            rows.append(
                Row(
                    f"one more ban of {what}, {where}: apply returns (in-process)",
                    [r["one_more_ban_ms"][fill][kind] for r in inproc],
                    "ms",
                    "≤ 2x with no ban in place" if fill != "empty" else "",
                )
            )
    return rows + flood_rows(
        repeat("kernel (UDP floods)", args.runs, lambda: run_in_namespace("bench.flood"))
    )


def flood_rows(runs: list[dict[str, Any]]) -> list[Row]:
    """The real sender's figures under bench/flood.py's forged UDP floods (issue 15, item 7)."""
    rows = []
    for case, what in (
        ("none", "no flood"),
        ("random", "100,000/s flood from random forged sources"),
        ("forged", "100,000/s flood forging the sender's own address"),
    ):
        latency = [
            r[case]["latency_ms"]["median"] if r[case]["latency_ms"] else float("inf") for r in runs
        ]
        rows.append(Row(f"UDP real sender, {what}: ban latency, median", latency, "ms"))
        rows.append(
            Row(
                f"UDP real sender, {what}: failures lost",
                [r[case]["loss_pct"] for r in runs],
                "%",
                "0" if case == "random" else "",
            )
        )
        if case != "none":
            rows.append(
                Row(
                    f"UDP {what}: rate the flood reached",
                    [r[case]["flood_per_s"] for r in runs],
                    "datagrams/s",
                )
            )
    return rows


def memory(args: argparse.Namespace) -> list[Row]:
    runs = repeat(
        "memory",
        args.runs,
        lambda: {mode: module("bench.memory", mode) for mode in ("tracked", "bounded", "bans")},
    )
    return [
        Row(
            "RSS, 1,000,000 tracked addresses (one failure each)",
            [r["tracked"]["rss_mib"] for r in runs],
            "MiB",
            "< 1024",
        ),
        Row(
            "RSS, 1,000,000 offenders through max_tracked = 100,000",
            [r["bounded"]["rss_mib"] for r in runs],
            "MiB",
            "bounded",
        ),
        Row(
            "tracked after 1,000,000 offenders, max_tracked = 100,000",
            [r["bounded"]["tracked"] for r in runs],
            "addresses",
            "100,000",
        ),
        Row("RSS, 100,000 active bans", [r["bans"]["rss_mib"] for r in runs], "MiB", "< 200"),
        Row(
            "RSS of the process before (baseline)", [r["tracked"]["base_mib"] for r in runs], "MiB"
        ),
    ]


def cli(args: argparse.Namespace) -> list[Row]:
    runs = repeat("cli", args.runs, lambda: module("bench.cli"))
    return [
        Row(f"appliancectl {what}: process start -> exit", [r[key] for r in runs], "ms", target)
        for key, what, target in (
            ("help", "--help", "< 150 ms"),
            ("status", "status (daemon running, socket from --config)", "< 150 ms"),
            ("status_socket", "status --socket (daemon running)", ""),
        )
    ]


def scrape(args: argparse.Namespace) -> list[Row]:
    runs = repeat("scrape", args.runs, lambda: run_in_namespace("bench.scrape"))
    what = "metrics scraped every 15 s, 100,000 bans: kernel listing CPU"
    return [
        Row(f"{what}, one listing", [r["listing_cpu_s"] for r in runs], "s"),
        Row(
            f"{what}, listed at each scrape",
            [r["every_scrape_cpu_s_per_min"] for r in runs],
            "s/min",
        ),
        Row(
            f"{what}, listing reused (KernelElements)",
            [r["reused_cpu_s_per_min"] for r in runs],
            "s/min",
            "≤ 1.2 (2% of a core)",
        ),
    ]


def stream(args: argparse.Namespace) -> list[Row]:
    runs = repeat("stream", args.runs, lambda: module("bench.stream"))
    rows = []
    for n in ("10000", "100000"):
        bans = f"{int(n):,} active bans"
        rows += [
            Row(
                f"decision stream, startup pull of {bans}: build",
                [r[n]["startup_ms"] for r in runs],
                "ms",
            ),
            Row(
                f"decision stream, startup pull of {bans}: body",
                [r[n]["startup_bytes"] / 1e6 for r in runs],
                "MB",
            ),
            Row(
                f"decision stream, delta pull of 10 changes among {bans}",
                [r[n]["delta_ms"] for r in runs],
                "ms",
                "flat in bans",
            ),
        ]
    return rows


def store(args: argparse.Namespace) -> list[Row]:
    runs = repeat("store", args.runs, lambda: module("bench.store"))
    size = statistics.median(r["size_mib"] for r in runs)
    return [
        Row(
            f"store of 100,000 bans ({size:,.0f} MiB): PRAGMA quick_check, median of 5",
            [r["quick_check_s"] for r in runs],
            "s",
        ),
        Row(
            "store of 100,000 bans: open (quick_check, migrations), median of 5",
            [r["open_s"] for r in runs],
            "s",
        ),
    ]


def parse(args: argparse.Namespace) -> list[Row]:
    runs = repeat("parse", args.runs, lambda: module("bench.parse"))
    return [Row(f"parse {name}", [r[name] for r in runs], "us/msg") for name in runs[0]]


HEADER = """\
| figure | median | min | max | unit | target | fail2ban | ours vs fail2ban |
|---|---:|---:|---:|---|---|---|---|"""


def line(r: Row) -> str:
    med, lo, hi = statistics.median(r.values), min(r.values), max(r.values)
    digits = 2 if med < 100 else 0
    cells = " | ".join(f"{v:,.{digits}f}" for v in (med, lo, hi))
    return f"| {r.name} | {cells} | {r.unit} | {r.target} | {r.fail2ban} | {r.ratio} |"


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="./dev bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--runs", type=int, default=3, help="runs per figure (default 3)")
    p.add_argument(
        "--only", choices=SECTIONS, action="append", help="run this section only (repeatable)"
    )
    p.add_argument("--lines", type=int, default=1_000_000, help="lines of the filters' log")
    p.add_argument(
        "--f2b-lines",
        type=int,
        default=100_000,
        help="the first lines of that log that fail2ban-regex reads (default 100,000)",
    )
    p.add_argument("--latency-samples", type=int, default=300)
    args = p.parse_args(argv)
    sections: dict[str, Callable[[argparse.Namespace], list[Row]]] = {
        "filters": filters,
        "ingest": ingest,
        "edge": edge,
        "kernel": kernel,
        "memory": memory,
        "cli": cli,
        "stream": stream,
        "store": store,
        "parse": parse,
        "scrape": scrape,
    }
    chosen = args.only or SECTIONS
    print(
        f"applianced benchmarks, {time.strftime('%Y-%m-%d')}, {args.runs} runs per figure, "
        f"{os.cpu_count()} CPUs"
    )
    if "filters" in chosen:
        print(
            f"filters: ours on a {args.lines:,}-line generated mail log; fail2ban-regex "
            f"(Debian's fail2ban) on its first {min(args.f2b_lines, args.lines):,} lines"
        )
    print(HEADER, flush=True)
    for name in chosen:  # each section's rows as soon as it is done
        print("\n".join(line(r) for r in sections[name](args)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
