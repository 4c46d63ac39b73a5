"""Ingest benchmark (issue "benchmark suite", figure 2): the real ``applianced`` process with
every shipped jail enabled (``--dry-run``: ingest is measured, not the kernel) on loopback, and
a sender process that sends lines of the generated mail log at increasing paced rates, over UDP
and over TCP (RFC 6587 octet counting). A step passes when the sender kept its pace (within 1%)
and the daemon's own ``received_udp``/``received_tcp`` counters (``appliancectl status``) show
less than 0.1% loss once they stop moving; the figure is the highest rate that passed.

``python -m bench.ingest`` prints one JSON object {"udp": rate, "tcp": rate, "steps": [...]};
``python -m bench.ingest send TRANSPORT PORT RATE SECONDS LOG`` is the sender process.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.filters import SHIPPED_CONFIG, mail_log

ROOT = Path(__file__).resolve().parents[1]
RATES = (5_000, 10_000, 25_000, 50_000, 75_000, 100_000, 150_000, 200_000)
SECONDS = 3.0
MAX_LOSS = 0.001
_MESSAGES = 200_000  # distinct messages the sender cycles through
_TICK = 0.001  # the sender's pacing step


def bench_config(port: int, workdir: Path) -> str:
    """The shipped config with every jail enabled, state in ``workdir``, listening on ``port``
    with no per-sender rate limit (the one sender is the load)."""
    text = SHIPPED_CONFIG.read_text()
    text = text.replace("enabled = false", "enabled = true")
    text = text.replace('"/var/lib/applianced"', json.dumps(str(workdir / "state")))
    text = text.replace('"/run/applianced/control.sock"', json.dumps(str(workdir / "control.sock")))
    return re.sub(r"(?m)^port = 5514$", f"port = {port}\nmax_rate_per_sender = 0", text)


def messages(transport: str, log: Path) -> list[bytes]:
    """Syslog messages (PRI + the log's traditional lines), framed for ``transport``."""
    out = []
    with log.open("rb") as f:
        for _, raw in zip(range(_MESSAGES), f, strict=False):
            msg = b"<22>" + raw.rstrip(b"\n")
            out.append(msg if transport == "udp" else b"%d %s" % (len(msg), msg))
    return out


def send(transport: str, port: int, rate: int, seconds: float, log: Path) -> dict[str, float]:
    """Send ``rate`` messages a second for ``seconds``, paced every millisecond."""
    pool = messages(transport, log)
    kind = socket.SOCK_DGRAM if transport == "udp" else socket.SOCK_STREAM
    sock = socket.socket(socket.AF_INET, kind)
    sock.connect(("127.0.0.1", port))
    total = int(rate * seconds)
    per_tick = max(1, int(rate * _TICK))
    sent = 0
    started = time.perf_counter()
    while sent < total:
        due = started + sent / rate
        ahead = due - time.perf_counter()
        if ahead > 0:
            time.sleep(ahead)
        n = min(per_tick, total - sent)
        batch = [pool[(sent + i) % len(pool)] for i in range(n)]
        if transport == "udp":
            for datagram in batch:
                try:  # noqa: SIM105 -- a context manager per datagram slows the sender
                    sock.send(datagram)
                except (BlockingIOError, ConnectionRefusedError):
                    pass  # counted as lost by the receiver's counters
        else:
            sock.sendall(b"".join(batch))
        sent += n
    elapsed = time.perf_counter() - started
    sock.close()
    return {"sent": sent, "seconds": elapsed}


def received(daemon: Any, transport: str) -> int:
    return int(daemon.receiver()[f"received_{transport}"])


def settled(daemon: Any, transport: str, expected: int, deadline: float) -> int:
    """The daemon's counter once it reaches ``expected`` or stops moving (or at the deadline)."""
    last = -1
    while True:
        now = received(daemon, transport)
        if now >= expected or now == last or time.monotonic() > deadline:
            return now
        last = now
        time.sleep(0.3)


def step(daemon: Any, port: int, transport: str, rate: int, log: Path) -> dict[str, Any]:
    before = received(daemon, transport)
    done = subprocess.run(
        [sys.executable, "-m", "bench.ingest", "send", transport, str(port), str(rate),
         str(SECONDS), str(log)],
        cwd=ROOT, capture_output=True, text=True, check=True, timeout=120,
    )  # fmt: skip
    sent = json.loads(done.stdout)
    got = settled(daemon, transport, before + sent["sent"], time.monotonic() + 10) - before
    loss = 1 - got / sent["sent"]
    achieved = sent["sent"] / sent["seconds"]
    return {
        "transport": transport,
        "rate": rate,
        "achieved": achieved,
        "loss": loss,
        "passed": loss < MAX_LOSS and achieved >= 0.99 * rate,
    }


def main() -> None:
    sys.path.insert(0, str(ROOT))
    from tests.e2e.daemon import Daemon, free_port

    log = mail_log(1_000_000)
    best = {"udp": 0, "tcp": 0}
    steps = []
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        port = free_port()
        daemon = Daemon(workdir, bench_config(port, workdir)).start()
        try:
            for transport in ("udp", "tcp"):
                for rate in RATES:
                    result = step(daemon, port, transport, rate, log)
                    steps.append(result)
                    if not result["passed"]:
                        break
                    best[transport] = rate
        finally:
            daemon.stop()
    print(json.dumps({**best, "steps": steps}))


if __name__ == "__main__":
    if sys.argv[1:2] == ["send"]:
        transport, port, rate, seconds, log = sys.argv[2:7]
        print(json.dumps(send(transport, int(port), int(rate), float(seconds), Path(log))))
    else:
        main()
