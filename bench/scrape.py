"""The kernel listing behind a metrics scrape (``kernelelements.KernelElements``), run INSIDE a
network namespace that ``bench/__main__.py`` creates: 100,000 bans in nftables, then a minute of
scrapes every 15 s on an injected clock. Prints one JSON object:

- listing_cpu_s: the CPU seconds of one listing of the 100,000 elements (median of 5);
- every_scrape_cpu_s_per_min: the CPU a minute of scrapes costs when each lists the sets;
- reused_cpu_s_per_min: the same with ``KernelElements.refresh``, which reuses a listing while
  it is younger than 50 times its CPU cost (over three simulated minutes, per minute).
"""

from __future__ import annotations

import json
import resource
import statistics
import tempfile
import time
from pathlib import Path

from twisted.internet.defer import maybeDeferred
from twisted.internet.task import Clock

from applianced.enforcement.base import JailRules, Restored
from applianced.enforcement.nftables import NftablesEnforcer
from applianced.kernelelements import KernelElements
from bench.kernel import address, config

BANS = 100_000
INTERVAL = 15.0  # Prometheus' scrape_interval of a typical job
MINUTES = 3


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def main() -> None:
    conf = config(Path(tempfile.mkdtemp()))
    enforcer = NftablesEnforcer()
    enforcer.setup([JailRules.of(j) for j in conf.jails if j.enabled])
    now = time.time()
    enforcer.restore_rows(
        [Restored("postfix-sasl", f"{address(i)}/32", now + 86400) for i in range(BANS)], now
    )
    one = []
    for _ in range(5):
        started = cpu()
        assert sum(enforcer.set_counts().values()) == BANS
        one.append(cpu() - started)
    clock = Clock()
    kernel = KernelElements(enforcer, clock, maybeDeferred)
    started = cpu()
    for _ in range(int(MINUTES * 60 / INTERVAL)):
        kernel.refresh()
        clock.advance(INTERVAL)
    reused = (cpu() - started) / MINUTES
    enforcer.flush()
    listing = statistics.median(one)
    print(
        json.dumps(
            {
                "listing_cpu_s": listing,
                "every_scrape_cpu_s_per_min": listing * 60 / INTERVAL,
                "reused_cpu_s_per_min": reused,
            }
        )
    )


if __name__ == "__main__":
    main()
