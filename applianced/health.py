"""The appliance's health counters: plain integers the hot path bumps, read at scrape time.

The Appliance creates one and hands it to its enforcement batcher and its hostname lookups,
which write it too, as does the decision stream's server (``decisions/server.py``, its
pulls); ``Appliance.stats()`` copies them into the read-only snapshot that the control
socket's ``status`` and ``metricfamilies.py`` read.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Health"]


@dataclass(slots=True)
class Health:
    store_errors: int = 0  # writes (and reads) the offenders store refused
    store_failing: bool = False  # the last write was refused; rows wait for the retry
    store_pending: int = 0  # rows (bans, ends) waiting in memory for the store
    store_dropped: int = 0  # rows dropped while waiting (beyond the limit)
    recovered: int = 0  # kernel elements the store lacked, adopted at start
    reconcile_repairs: int = 0  # times the kernel's sets were found drifted and restored
    reconcile_missing: int = 0  # bans the kernel had lost, put back by those repairs
    reconcile_unknown: int = 0  # elements no ban accounted for, removed by those repairs
    enforcement_errors: int = 0
    last_error: str | None = None
    unapplied: int = 0  # bans and unbans of refused batches, waiting for their retry
    refused_elements: int = 0  # refused alone by the backend: reported, never sent again
    bans_total: int = 0
    unbans_total: int = 0
    expired_total: int = 0
    batches: int = 0
    skipped_already_banned: int = 0
    dns_failed: int = 0
    dns_dropped: int = 0
    bouncer_pulls: int = 0  # decision stream requests answered (decisions/server.py)
    bouncer_refused: int = 0  # ... refused: a missing or wrong X-Api-Key
    # Decision stream connections closed at once (over its caps) or requests with a body
    bouncer_connections_refused: int = 0
