"""UDP floods with forged sources (issue 15, item 7): the real sender's ban latency and loss
while a flood of 100,000 datagrams a second hits the UDP listener. The real ``applianced``
process with every shipped jail and the shipped limits, enforcing with real nftables, run
INSIDE a network namespace that ``bench/__main__.py`` creates (the flood never leaves it).

The listener is on 192.0.2.1 with allowed_senders = ["192.0.2.2/32"] (both on the
namespace's loopback); the real sender, 192.0.2.2, sends 100 offenders a second for
``SECONDS``, each MAXRETRY postfix-sasl failures, and times its deciding message to its
element's ``add element`` event on ``nft monitor``. Beside it FLOOD_PROCESSES processes write
hand-built datagrams through a raw socket, paced every millisecond, with a syslog line no jail
reads, for one of three cases:

- ``none``: no flood (the baseline);
- ``random``: from distinct forged sources outside allowed_senders (198.18.0.0/15);
- ``forged``: forging the real sender's own address.

Per case: ``latency_ms`` (median, p99 of the offenders banned), ``banned_pct`` (offenders
banned of those sent, within ``SETTLE`` seconds of the end), ``loss_pct`` (the real sender's
failures that no jail counted, from postfix-sasl's ``matched``), ``flood_per_s`` (the rate
the flood processes reached together) and the daemon's ``udp_kernel_drops``.

``python -m bench.flood`` prints one JSON object {case: figures};
``python -m bench.flood send SPOOF RATE SECONDS PORT`` is the flood process.
"""

from __future__ import annotations

import json
import socket
import struct
import subprocess
import sys
import tempfile
import time
from contextlib import suppress
from pathlib import Path
from typing import Any

from bench.ingest import bench_config
from bench.kernel import address, latencies
from bench.live import MAXRETRY, monitor, sasl

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tests.e2e.daemon import Daemon, wait_for  # noqa: E402

SERVER, SENDER = "192.0.2.1", "192.0.2.2"
PORT = 5514
FLOOD_RATE = 100_000
FLOOD_PROCESSES = 2  # one Python process writes ~120,000 a second at best, on an idle core
SECONDS = 3.0
OFFENDERS_PER_S = 100
SETTLE = 10.0  # seconds after the flood within which a ban counts
CASES = ("none", "random", "forged")
_TICK = 0.001
_NOISE = b"<22>Nov 22 10:00:01 mx CRON[1]: (root) CMD (run-parts /etc/cron.hourly)"


def config(workdir: Path) -> str:
    """The shipped config, every jail, the shipped limits; UDP on SERVER from SENDER only."""
    text = bench_config(PORT, workdir).replace("\nmax_rate_per_sender = 0", "")
    text = text.replace('address = "127.0.0.1"', f'address = "{SERVER}"')
    return text.replace('["127.0.0.0/8", "::1/128"]', f'["{SENDER}/32"]')


def datagram(src: str | int, payload: bytes) -> bytes:
    """An IPv4 + UDP datagram from ``src`` to SERVER:PORT; the kernel fills in the IP length
    and checksum; UDP checksum 0 (none)."""
    source = src.to_bytes(4, "big") if isinstance(src, int) else socket.inet_aton(src)
    udp = struct.pack("!HHHH", 40000, PORT, 8 + len(payload), 0)
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 0, 0, 0, 64, 17, 0, source, socket.inet_aton(SERVER))
    return ip + udp + payload


def send(spoof: str, rate: int, seconds: float) -> None:
    """The flood process (``spoof``: "random" or "forged"): ``rate`` forged datagrams a second
    for ``seconds``; prints
    "started", then the rate reached."""
    base = int.from_bytes(socket.inet_aton("198.18.0.0"), "big")
    if spoof == "random":
        pool = [datagram(base + i, _NOISE) for i in range(65_536)]
    else:
        pool = [datagram(SENDER, _NOISE)]
    raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    target = (SERVER, 0)
    total, per_tick = int(rate * seconds), max(1, int(rate * _TICK))
    print("started", flush=True)
    sent, started = 0, time.perf_counter()
    while sent < total:
        ahead = started + sent / rate - time.perf_counter()
        if ahead > 0:
            time.sleep(ahead)
        for i in range(sent, min(sent + per_tick, total)):
            raw.sendto(pool[i % len(pool)], target)
        sent = min(sent + per_tick, total)
    print(json.dumps(total / (time.perf_counter() - started)), flush=True)


def case(spoof: str) -> dict[str, Any]:
    """One flood case against a fresh daemon."""
    with tempfile.TemporaryDirectory() as tmp:
        d = Daemon(Path(tmp), config(Path(tmp)), args=()).start()
        try:
            with monitor() as seen:
                floods = [] if spoof == "none" else [
                    subprocess.Popen(
                        [sys.executable, "-m", "bench.flood", "send", spoof,
                         str(FLOOD_RATE // FLOOD_PROCESSES), str(SECONDS + 0.5)],
                        cwd=ROOT, stdout=subprocess.PIPE, text=True,
                    )
                    for _ in range(FLOOD_PROCESSES)
                ]  # fmt: skip
                for flood in floods:
                    assert flood.stdout is not None
                    flood.stdout.readline()  # "started"
                sent = real_sender()
                flood_rate = sum(
                    float(flood.communicate(timeout=60)[0].strip().splitlines()[-1])
                    for flood in floods
                )
                with suppress(AssertionError):  # the offenders not banned are the figure
                    wait_for("every offender's ban", lambda: sent.keys() <= seen.keys(), SETTLE)
            status = d.ctl("status")
        finally:
            d.stop()
    banned = [(seen[a] - t) * 1000 for a, t in sent.items() if a in seen]
    matched = status["jails"]["postfix-sasl"]["matched"]
    return {
        "latency_ms": latencies(banned) if banned else None,
        "banned_pct": 100 * len(banned) / len(sent),
        "loss_pct": 100 * (1 - matched / (len(sent) * MAXRETRY)),
        "flood_per_s": flood_rate,
        "udp_kernel_drops": status["receiver"].get("udp_kernel_drops"),
    }


def real_sender() -> dict[str, float]:
    """OFFENDERS_PER_S offenders a second for SECONDS, MAXRETRY failures each from SENDER;
    the deciding failure's send time per offender."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((SENDER, 0))
    sock.connect((SERVER, PORT))
    sent: dict[str, float] = {}
    started = time.perf_counter()
    for n in range(int(OFFENDERS_PER_S * SECONDS)):
        ahead = started + n / OFFENDERS_PER_S - time.perf_counter()
        if ahead > 0:
            time.sleep(ahead)
        addr = address(200_000 + n)
        for _ in range(MAXRETRY - 1):
            sock.send(sasl(addr))
        sent[addr] = time.perf_counter()
        sock.send(sasl(addr))
    sock.close()
    return sent


def setup() -> None:
    """The listener's and the real sender's addresses on this namespace's loopback."""
    for addr in (SERVER, SENDER):
        subprocess.run(["ip", "addr", "add", f"{addr}/32", "dev", "lo"], check=True)


def main(argv: list[str]) -> None:
    if argv and argv[0] == "send":
        send(argv[1], int(argv[2]), float(argv[3]))
        return
    setup()
    print(json.dumps({spoof: case(spoof) for spoof in CASES}))


if __name__ == "__main__":
    main(sys.argv[1:])
