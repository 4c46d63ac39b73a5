"""fail2ban's own kernel figures, measured as bench/live.py measures ours, run INSIDE a network
namespace that ``bench/__main__.py`` creates: Debian's ``fail2ban-server`` (the unpacked
package, bench/fail2ban.py; ``-f`` in the foreground, never the Debian service) with one jail,
postfix-sasl (``postfix[mode=auth]``, maxretry 5) on a log file, its stock nftables action and
the pyinotify backend (pyinotify from PyPI into .cache/fail2ban-pylib, as Debian recommends).
Prints one JSON object:

- latency_ms: the write of the deciding line to the log (1,000 lines a second of the bench log
  in the background, one offender every 20 ms) to its element's event on ``nft monitor``;
- burst_bans_per_s: 1,000 addresses (not 10,000: at fail2ban's pace that alone would take
  minutes) primed with 4 failures each write their deciding line within 0.05 s; bans over the
  time from the first deciding line until all are in the kernel.

``python -m bench.f2b_live SAMPLES``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import nftables

from bench.fail2ban import tree
from bench.filters import mail_log
from bench.kernel import address, latencies
from bench.live import LATENCY_BASE, MAXRETRY, monitor

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tests.e2e.daemon import wait_for  # noqa: E402

PYLIB = ROOT / ".cache" / "fail2ban-pylib"
BURST = 1_000
SERVER = """\
[Definition]
loglevel = INFO
logtarget = {work}/fail2ban.log
socket = {work}/fail2ban.sock
pidfile = {work}/fail2ban.pid
dbfile = :memory:
"""
JAIL = """\
[DEFAULT]
banaction = nftables[type=multiport]
backend = pyinotify
[postfix-sasl]
enabled = true
filter = postfix[mode=auth]
port = smtp
logpath = {work}/mail.log
maxretry = {maxretry}
findtime = 600
bantime = 600
"""


def pylib() -> Path:
    """pyinotify for fail2ban's /usr/bin/python3, installed once into a bench-only folder."""
    if not (PYLIB / "pyinotify.py").exists():
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check",
             "--target", str(PYLIB), "pyinotify==0.9.6"],
            check=True, capture_output=True, timeout=600,
        )  # fmt: skip
    return PYLIB


def sasl(addr: str) -> str:
    return (f"{time.strftime('%b %e %H:%M:%S')} mx postfix/smtpd[1]: warning: unknown[{addr}]: "
            "SASL LOGIN authentication failed: UGFzc3dvcmQ6\n")  # fmt: skip


def kernel_elements() -> int:
    nft = nftables.Nftables()
    nft.set_json_output(True)
    rc, out, _ = nft.cmd("list table inet f2b-table")
    if rc != 0:
        return 0
    return sum(len(o["set"].get("elem", ())) for o in json.loads(out)["nftables"] if "set" in o)


@contextmanager
def server() -> Iterator[tuple[IO[str], Path]]:
    """fail2ban-server on a fresh config; yields the log it reads, opened for appending, and
    its work directory."""
    base = tree()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        conf = work / "conf"
        shutil.copytree(base / "etc" / "fail2ban", conf)
        shutil.rmtree(conf / "jail.d")  # Debian's enables sshd on the system's logs
        (conf / "fail2ban.local").write_text(SERVER.format(work=work))
        (conf / "jail.local").write_text(JAIL.format(work=work, maxretry=MAXRETRY))
        log = (work / "mail.log").open("a", buffering=1)
        python_path = f"{base / 'usr' / 'lib' / 'python3' / 'dist-packages'}:{pylib()}"
        proc = subprocess.Popen(
            ["/usr/bin/python3", str(base / "usr" / "bin" / "fail2ban-server"), "-f", "-x",
             "-c", str(conf)],
            env={"PYTHONPATH": python_path, "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
                 "LANG": "C.UTF-8"},
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            started = "Jail 'postfix-sasl' started"
            wait_for("fail2ban-server", lambda: _log_has(work, started), 30)
            for _ in range(MAXRETRY):  # a first ban creates the table and its set
                log.write(sasl("192.0.2.254"))
            wait_for("fail2ban's first ban", lambda: kernel_elements() == 1, 30)
            yield log, work
        finally:
            proc.terminate()
            proc.wait(timeout=30)
            log.close()


def _log_has(work: Path, text: str) -> bool:
    return _log_count(work, text) > 0


def _log_count(work: Path, text: str) -> int:
    path = work / "fail2ban.log"
    return path.read_text().count(text) if path.exists() else 0


def latency(samples: int) -> list[float]:
    background = [
        time.strftime("%b %e %H:%M:%S") + raw[15:]
        for raw in mail_log(1_000_000).open()
        if "198.19." not in raw
    ][:20_000]
    with server() as (log, _), monitor() as seen:
        sent: dict[str, float] = {}
        started = time.perf_counter()
        for tick in range(samples * 20):
            ahead = started + tick / 1000 - time.perf_counter()
            if ahead > 0:
                time.sleep(ahead)
            log.write(background[tick % len(background)])
            addr = address(LATENCY_BASE + tick // 20)
            if tick % 20 == 0:
                log.write(sasl(addr) * (MAXRETRY - 1))
            elif tick % 20 == 5:
                sent[addr] = time.perf_counter()
                log.write(sasl(addr))
        wait_for("every deciding line's element", lambda: sent.keys() <= seen.keys(), 60)
    return [(seen[a] - t) * 1000 for a, t in sent.items()]


def burst() -> float:
    addrs = [address(i) for i in range(BURST)]
    with server() as (log, work):
        log.write("".join(sasl(a) * (MAXRETRY - 1) for a in addrs))
        primed = MAXRETRY + BURST * (MAXRETRY - 1)  # its log says "Found" for each failure
        wait_for(
            "fail2ban to read the priming lines",
            lambda: _log_count(work, "] Found ") >= primed,
            120,
        )
        first = time.perf_counter()
        log.write("".join(sasl(a) for a in addrs))
        wait_for("all 1,000 bans in the kernel", lambda: kernel_elements() >= BURST + 1, 300)
        return BURST / (time.perf_counter() - first)


def main(argv: list[str]) -> None:
    samples = int(argv[0]) if argv else 100
    lat = latency(samples)
    out: dict[str, Any] = {
        "latency_ms": latencies(lat),
        "burst_bans_per_s": burst(),
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1:])
