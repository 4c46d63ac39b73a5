"""Kernel figures of the real ``applianced`` process with real nftables, run INSIDE a network
namespace that ``bench/__main__.py`` creates (never against the host's ruleset). Prints one
JSON object:

- latency_ms: the deciding UDP datagram's send, to its element's ``add element`` event on
  ``nft monitor`` (the kernel has committed it), while 1,000 lines a second of the generated mail
  log run in the background; every shipped jail enabled. One offender every 20 ms.
- burst: 10,000 distinct addresses, primed with MAXRETRY - 1 failures, each send its deciding
  failure within one second (TCP, octet-counted: no loss); ``after_last_s`` is the time from
  the last deciding message's send until the last of the 10,000 elements shows on ``nft
  monitor`` (polling the kernel's sets would slow the daemon's own transactions),
  ``bans_per_s`` 10,000 over the time from the first deciding message to that point.
- restore_s: the daemon started on a store holding 100,000 active bans, until its TCP listener
  accepts (it opens only after the restore transaction, so all are in the kernel then;
  counted to check), interpreter start-up included.

``python -m bench.live SAMPLES``.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from ipaddress import ip_network
from pathlib import Path
from typing import Any

import nftables

from applianced.rules.decision import BanDecision, BanKind
from applianced.store.sqlite import SqliteOffenderStore
from bench.filters import mail_log
from bench.ingest import bench_config
from bench.kernel import address, latencies

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tests.e2e.daemon import BIN, Daemon, free_port, wait_for  # noqa: E402

BURST = 10_000
RESTORE = 100_000
MAXRETRY = 5  # the shipped postfix-sasl jail's (the shipped defaults')
LATENCY_BASE = 110_000  # address(i) offsets: clear of the burst's and the restore's
_ADDRESS = re.compile(r"\d+\.\d+\.\d+\.\d+")


def sasl(addr: str) -> bytes:
    return (f"<34>Nov 22 10:00:01 mx postfix/smtpd[1]: warning: unknown[{addr}]: "
            "SASL LOGIN authentication failed: UGFzc3dvcmQ6").encode()  # fmt: skip


def framed(msg: bytes) -> bytes:
    return b"%d %s" % (len(msg), msg)


def kernel_elements() -> int:
    """Elements in every set of our table now."""
    nft = nftables.Nftables()
    nft.set_json_output(True)
    rc, out, err = nft.cmd("list table inet applianced")
    if rc != 0:
        raise SystemExit(f"nft list table failed: {err}")
    return sum(
        len(o["set"].get("elem", ())) for o in json.loads(out)["nftables"] if "set" in o
    )  # fmt: skip


@contextmanager
def monitor() -> Iterator[dict[str, float]]:
    """``nft monitor new elements``: address -> time.perf_counter() its event was read."""
    seen: dict[str, float] = {}
    proc = subprocess.Popen(
        ["nft", "monitor", "new", "elements"], stdout=subprocess.PIPE, text=True, bufsize=1
    )

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            now = time.perf_counter()
            for addr in _ADDRESS.findall(line):
                seen.setdefault(addr, now)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        _wait_listening(seen)
        yield seen
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        reader.join(timeout=10)


def _wait_listening(seen: dict[str, float]) -> None:
    """Until the monitor prints events: add a probe element to a table of the bench's own (in
    this namespace) until it shows, then remove that table."""
    probe = "192.0.2.254"
    nft = nftables.Nftables()
    nft.cmd("add table inet benchprobe")
    nft.cmd("add set inet benchprobe probe { type ipv4_addr; }")

    def shown() -> bool:
        nft.cmd(f"add element inet benchprobe probe {{ {probe} }}")
        nft.cmd(f"delete element inet benchprobe probe {{ {probe} }}")
        return probe in seen

    wait_for("nft monitor to print events", shown)
    nft.cmd("delete table inet benchprobe")
    seen.clear()


@contextmanager
def daemon(port: int) -> Iterator[Daemon]:
    """The daemon on every shipped jail (bench/ingest.py's config), enforcing with nftables."""
    with tempfile.TemporaryDirectory() as tmp:
        d = Daemon(Path(tmp), bench_config(port, Path(tmp)), args=()).start()
        try:
            yield d
        finally:
            d.stop()


def latency(samples: int) -> list[float]:
    port = free_port()
    background = [b"<22>" + raw.rstrip(b"\n") for raw in mail_log(1_000_000).open("rb")
                  if b"198.19." not in raw][:20_000]  # fmt: skip
    with daemon(port), monitor() as seen:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.connect(("127.0.0.1", port))
        sent: dict[str, float] = {}
        started = time.perf_counter()
        for tick in range(samples * 20):
            ahead = started + tick / 1000 - time.perf_counter()
            if ahead > 0:
                time.sleep(ahead)
            sock.send(background[tick % len(background)])
            addr = address(LATENCY_BASE + tick // 20)
            if tick % 20 == 0:
                for _ in range(MAXRETRY - 1):
                    sock.send(sasl(addr))
            elif tick % 20 == 5:
                sent[addr] = time.perf_counter()
                sock.send(sasl(addr))
        wait_for("every deciding message's element", lambda: sent.keys() <= seen.keys())
    return [(seen[a] - t) * 1000 for a, t in sent.items()]


def burst() -> dict[str, float]:
    port = free_port()
    addrs = [address(i) for i in range(BURST)]
    with daemon(port) as d, monitor() as seen:
        sock = socket.create_connection(("127.0.0.1", port))
        sock.sendall(b"".join(framed(sasl(a)) for a in addrs for _ in range(MAXRETRY - 1)))
        primed = BURST * (MAXRETRY - 1)
        wait_for("the priming failures", lambda: d.receiver()["received_tcp"] >= primed, 60)
        deciding = [framed(sasl(a)) for a in addrs]
        first = time.perf_counter()
        for i in range(0, BURST, 100):  # 100 every 5 ms: all within 0.5 s
            ahead = first + i / 20_000 - time.perf_counter()
            if ahead > 0:
                time.sleep(ahead)
            sock.sendall(b"".join(deciding[i : i + 100]))
        last = time.perf_counter()
        wait_for("all 10,000 bans in the kernel", lambda: len(seen) >= BURST, 60)
        done = max(seen[a] for a in addrs)
        sock.close()
    return {"after_last_s": done - last, "bans_per_s": BURST / (done - first)}


def restore() -> float:
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        (workdir / "state").mkdir()
        now = time.time()
        store = SqliteOffenderStore(workdir / "state" / "offenders.sqlite", lines_per_ban=0)
        store.record_bans([
            BanDecision("postfix-sasl", ip_network(address(i)), 86400.0, BanKind.AUTO, 1, now)
            for i in range(RESTORE)
        ])  # fmt: skip
        store.close()
        d = Daemon(workdir, bench_config(port, workdir), args=())
        started = time.perf_counter()
        d.proc = subprocess.Popen(
            [str(BIN / "applianced"), "--config", str(d.config)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            wait_for("the TCP listener", lambda: _accepts(port), 60)
            elapsed = time.perf_counter() - started
            restored = kernel_elements()
        finally:
            d.stop()
    if restored != RESTORE:
        raise SystemExit(f"restore: {restored} elements in the kernel, expected {RESTORE}")
    return elapsed


def _accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.05).close()
    except OSError:
        return False
    return True


def main(argv: list[str]) -> None:
    samples = int(argv[0]) if argv else 300
    lat = latency(samples)
    out: dict[str, Any] = {
        "latency_ms": latencies(lat),
        "burst": burst(),
        "restore_s": restore(),
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1:])
