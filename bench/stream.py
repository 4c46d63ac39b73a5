"""Decision stream figures of issue 18: what a CrowdSec bouncer's pull costs the appliance.

In one process, a real Appliance (the in-memory enforcer and store, a ``task.Clock``) holds
N active bans (adopted in one batch, as a cluster's would be: the stream reads only the book),
and the stream's HTTP resource (``decisions/server.py``) answers a registered bouncer's
requests, key check and JSON included (the TLS and the socket are not measured):

- ``GET /v1/decisions/stream?startup=true``: every ban, its time and the response's bytes;
- ``startup=false`` after 10 changes (5 bans lifted, 5 new): the delta poll, at N = 10,000 and
  N = 100,000, to show that it costs the changes and not the bans.

Each figure is the median of ``REPEATS`` requests. Run by ``bench/__main__.py``
(``./dev bench --only stream``) as ``python -m bench.stream``; prints one JSON object.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from ipaddress import IPv4Network
from pathlib import Path
from typing import Any

from twisted.internet.task import Clock
from twisted.web.test.requesthelper import DummyRequest

from applianced.appliance import Appliance
from applianced.bouncers import KeyRing, add_bouncer
from applianced.conf.schema import DecisionsConf
from applianced.decisions.server import DecisionService
from applianced.rules.decision import Ban, BanKind
from applianced.testing import MemoryEnforcer, MemoryStore

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tests.helpers import config  # noqa: E402

REPEATS = 7
T0 = 1_800_000_000.0
BASE = int.from_bytes(bytes([10, 0, 0, 0]), "big")  # bans on 10.0.0.0/8 addresses


def ban(i: int, now: float) -> Ban:
    return Ban("sshd", IPv4Network((BASE + i, 32)), now, now + 3600 + i % 600, BanKind.AUTO, 1)


def get(service: DecisionService, key: str, startup: bool) -> bytes:
    request = DummyRequest([b"stream"])  # type: ignore[no-untyped-call]
    request.args = {b"startup": [b"true" if startup else b"false"], b"scopes": [b"ip,range"]}
    request.requestHeaders.addRawHeader(b"X-Api-Key", key.encode())
    body: bytes = service.resource.render_GET(request)
    return body


def measure(count: int, work: Path) -> dict[str, float]:
    clock = Clock()
    clock.advance(T0)
    app = Appliance(config(work), MemoryStore(), MemoryEnforcer(), clock)  # type: ignore[arg-type]
    app.start()
    app.adopt([ban(i, T0) for i in range(count)], [])
    key = add_bouncer(work, f"bench{count}")
    service = DecisionService(DecisionsConf(), app, KeyRing(work), reactor=None)
    startup, size = [], 0
    for _ in range(REPEATS):
        started = time.perf_counter()
        body = get(service, key, startup=True)
        startup.append(time.perf_counter() - started)
        size = len(body)
    delta, changes = [], 0
    for r in range(REPEATS):
        get(service, key, startup=False)  # the bouncer is up to date
        for j in range(5):
            app.unban(IPv4Network((BASE + r * 5 + j, 32)), "sshd", local=True)
        app.adopt([ban(count + r * 5 + j, T0) for j in range(5)], [])
        started = time.perf_counter()
        body = get(service, key, startup=False)
        delta.append(time.perf_counter() - started)
        answer: dict[str, Any] = json.loads(body)
        changes = len(answer["new"] or ()) + len(answer["deleted"] or ())
    app.stop()
    return {
        "startup_ms": statistics.median(startup) * 1000,
        "startup_bytes": size,
        "delta_ms": statistics.median(delta) * 1000,
        "delta_changes": changes,
    }


def main() -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        out: dict[str, Any] = {}
        for count in (10_000, 100_000):
            work = Path(tmp) / str(count)
            work.mkdir()
            out[str(count)] = measure(count, work)
        return out


if __name__ == "__main__":
    print(json.dumps(main()))
