"""Cluster mode's replicator: moves ban changes between the local store and the cluster log.

ARCHITECTURE. The reactor never waits on the network database, and the appliance works without
it: the local SQLite store stays the Appliance's synchronous store, a full replica of the
cluster's ban list. This service moves changes both ways, off the reactor thread, and asks the
store only for its ``store.base.ClusterOutbox`` interface:

- out: every ``poll`` seconds, while the database answers, the reactor reads the store's
  outbox (this appliance's bans and operators' ends, written in the same transaction as the
  change) and, if no push is running, hands it to the push thread, which keeps a connection of
  its own and writes it to PostgreSQL (``postgres.push``); once committed, the reactor deletes
  it from the outbox. A crash in between replays it, and the push skips it.
- in: the listen thread keeps one connection that LISTENs; on each notification (or every
  ``wait`` seconds) it reads the log after its cursor and hands the changes to the reactor
  (``callFromThread``), which records them in the store with the new cursor in one transaction
  and gives the bans that started or ended to ``Appliance.adopt``. The same thread sends the
  heartbeat every ``heartbeat`` seconds and reads the other nodes' for ``status``.

Failures (``share_failures``): ``share`` is the engine's ``on_failure``: it queues each failure
this appliance counted in memory (at most ``_FAILURES_MAX``; beyond, and whenever the database
is unreachable, they are dropped and counted, never journaled: they are worth something for a
findtime only). Each tick hands the queue, with the outbox, to the push thread
(``postgres.push_failures``). The LISTEN thread reads the other appliances' failures after its
failure cursor (starting at the newest row when it connects) and gives them to ``counted``
(``Appliance.remote_failures``) on the reactor, which counts them in its windows; they are
never queued here again, so nothing echoes.

Database down: bans are decided, enforced and recorded locally as ever, the outbox grows, the
log (once per change of state) and ``status`` say so, and both directions catch up when it
returns. The listen thread alone probes it, with a backoff (``backoff_first`` doubling to
``backoff_max`` seconds); pushes wait for it and start the moment it is back. A silent path
(a cut link, no reset) is found by the connections' TCP keepalives and user timeout
(``postgres.connect_args``) and by the heartbeat's age: no heartbeat for ``stale`` seconds is
down. Both threads are daemon threads and a stop waits for them ``_STOP_WAIT`` seconds at most:
one blocked on a dead path is left to the process's exit (what it did not push is in the
outbox, replayed at the next start). While it runs, the driver's own log lines (psycopg's
``logging``) go to ours (``driverlog.py``).
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg
from twisted.application.service import Service
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from applianced import __version__
from applianced.cluster import postgres
from applianced.cluster.driverlog import DriverLog
from applianced.rules.decision import Ban
from applianced.rules.engine import CountedFailure
from applianced.store.base import BanEvent, ClusterOutbox

__all__ = ["Replicator"]

log = Logger()

_BATCH = 2000  # changes per push and per read of the log
_STOP_WAIT = 2.0  # seconds a stop waits for the threads, together
_COUNT_EVERY = 1.0  # seconds between two counts of the outbox while nothing is pushed
_FAILURES_MAX = 10_000  # counted failures queued for the next push; more are dropped
_DROPS_LOG_EVERY = 60.0  # seconds between two warnings about dropped failures


@dataclass(slots=True)
class ClusterState:
    """What ``status`` and the metrics show; written on the reactor thread only."""

    connected: bool = False
    last_error: str | None = None
    backlog: int = 0
    pushed: int = 0
    adopted: int = 0
    failures_shared: int = 0
    failures_received: int = 0
    failures_dropped: int = 0
    nodes: list[dict[str, Any]] = field(default_factory=list)
    beat_at: float | None = None  # reactor time of the last heartbeat (and of ``nodes``)


class Replicator(Service):
    """Cluster mode's two-way replication for one appliance (see the module docstring).
    ``adopt`` is ``Appliance.adopt``; ``connect_args`` are psycopg's; ``counted``, given when
    failures are shared, is ``Appliance.remote_failures``."""

    def __init__(
        self,
        store: ClusterOutbox,
        adopt: Callable[[Sequence[Ban], Sequence[Ban]], None],
        connect_args: dict[str, Any],
        reactor: Any,
        *,
        where: str = "the cluster database",
        counted: Callable[[Sequence[CountedFailure]], None] | None = None,
        poll: float = 0.05,
        wait: float = 1.0,
        heartbeat: float = 2.0,
        stale: float = 8.0,
        backoff_first: float = 0.25,
        backoff_max: float = 1.0,
    ) -> None:
        self.store = store
        self.node = store.node
        self.adopt = adopt
        self.connect_args = connect_args
        self.reactor = reactor
        self.where = where
        self.counted = counted
        self.poll = poll
        self.wait = wait
        self.heartbeat_every = heartbeat
        self.stale = stale
        self.backoff_first = backoff_first
        self.backoff_max = backoff_max
        self.state = ClusterState()
        self._pushing = False
        self._reconnect = False  # the next push opens a new connection (the last one failed)
        self._answered_at = 0.0  # the last connection or heartbeat: the stale heartbeat's start
        self._push_after = 0.0
        self._push_delay = backoff_first
        self._count_after = 0.0
        self._stop = threading.Event()
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._loop: LoopingCall | None = None
        self._driver = DriverLog()
        self._failures: list[CountedFailure] = []
        self._drops_logged = 0  # failures_dropped when last logged
        self._drops_log_after = 0.0

    # -- life cycle (reactor thread) ---------------------------------------------------------

    def startService(self) -> None:
        super().startService()
        self.state.backlog = self.store.backlog()
        self._driver.install()
        self._stop.clear()
        self._threads = [
            threading.Thread(target=self._listen, args=(self.store.cursor(),),
                             name="applianced-listen", daemon=True),
            threading.Thread(target=self._pusher, name="applianced-push", daemon=True),
        ]  # fmt: skip
        for thread in self._threads:
            thread.start()
        self._loop = LoopingCall(self._tick)
        self._loop.clock = self.reactor
        self._loop.start(self.poll)

    def stopService(self) -> None:
        super().stopService()
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._stop.set()
        self._jobs.put(None)
        deadline = time.monotonic() + _STOP_WAIT
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        if any(thread.is_alive() for thread in self._threads):
            log.info(
                "cluster: not waiting for {where} (no answer); what was not pushed is in the"
                " local outbox and is pushed at the next start",
                where=self.where,
            )
        self._driver.uninstall()

    def status(self) -> dict[str, Any]:
        """``heartbeat_age``: seconds since this appliance's last heartbeat (None before the
        first); each node's ``age`` is its heartbeat's age by the database's clock when read,
        plus the seconds since, so both grow while the database does not answer."""
        s = self.state
        since = None if s.beat_at is None else self.reactor.seconds() - s.beat_at
        return {
            "node": self.node,
            "database": self.where,
            "connected": s.connected,
            "last_error": s.last_error,
            "heartbeat_age": since,
            "backlog": s.backlog,
            "pushed": s.pushed,
            "adopted": s.adopted,
            "failures": None
            if self.counted is None
            else {
                "shared": s.failures_shared,
                "received": s.failures_received,
                "dropped": s.failures_dropped,
            },
            "nodes": [{**n, "age": n["age"] + (since or 0.0)} for n in s.nodes],
        }

    # -- out: the outbox to the log ----------------------------------------------------------

    def share(self, failure: CountedFailure) -> None:
        """Queue a failure this appliance counted for the next push (the engine's hook: an
        append, or a drop when the queue is full)."""
        if len(self._failures) < _FAILURES_MAX:
            self._failures.append(failure)
        else:
            self.state.failures_dropped += 1

    def _log_drops(self) -> None:
        dropped = self.state.failures_dropped - self._drops_logged
        if dropped and self.reactor.seconds() >= self._drops_log_after:
            log.warn(
                "cluster: dropped {dropped} counted failures not shared (database unreachable"
                " or too many at once); each appliance still counts its own",
                dropped=dropped,
            )
            self._drops_logged = self.state.failures_dropped
            self._drops_log_after = self.reactor.seconds() + _DROPS_LOG_EVERY

    def _tick(self) -> None:
        now = self.reactor.seconds()
        if self.state.connected and now - self._answered_at > self.stale:
            silent = now - self._answered_at
            self._down(f"no heartbeat for {silent:.0f} s: the database does not answer")
        if not self.state.connected:
            self.state.failures_dropped += len(self._failures)
            self._failures = []
        self._log_drops()
        if self._pushing:
            return
        if not self.state.connected or now < self._push_after:
            if now >= self._count_after:  # status shows the backlog grow while nothing is pushed
                self.state.backlog = self.store.backlog()
                self._count_after = now + _COUNT_EVERY
            return
        events = self.store.pending(_BATCH)
        self.state.backlog = len(events) if len(events) < _BATCH else self.store.backlog()
        failures, self._failures = self._failures, []
        if events or failures:
            self._pushing = True
            self._jobs.put(_Job(events, failures, self._reconnect))
            self._reconnect = False

    def _pusher(self) -> None:
        """The push thread: each job in one transaction on its own connection, opened when
        needed; the result handed to the reactor."""
        conn: psycopg.Connection[Any] | None = None
        while (job := self._jobs.get()) is not None:
            try:
                if conn is not None and job.reconnect:
                    conn.close()
                    conn = None
                if conn is None:
                    conn = psycopg.connect(**self.connect_args, autocommit=True)
                new = postgres.push(conn, job.events, self.node) if job.events else 0
                if job.failures:
                    postgres.push_failures(conn, job.failures, self.node)
            except Exception:
                failure = Failure()
                if conn is not None:
                    conn.close()
                    conn = None
                self.reactor.callFromThread(self._push_failed, failure, job.failures)
            else:
                self.reactor.callFromThread(self._pushed, new, job.events, job.failures)
        if conn is not None:
            conn.close()

    def _pushed(
        self, new: int, events: Sequence[BanEvent], failures: Sequence[CountedFailure]
    ) -> None:
        self._pushing = False
        self.state.failures_shared += len(failures)
        if not self.running:  # stopped meanwhile: the store may be closed; replayed next start
            return
        self._push_delay = self.backoff_first
        if events:
            self.store.pushed(events[-1].seq)
        self.state.pushed += new
        self.state.backlog = self.store.backlog()

    def _push_failed(self, reason: Failure, failures: Sequence[CountedFailure] = ()) -> None:
        self._pushing = False
        self.state.failures_dropped += len(failures)
        if not reason.check(psycopg.Error, OSError):
            log.failure("pushing bans to the cluster failed", reason)
        self._down(reason.getErrorMessage())
        self._push_after = self.reactor.seconds() + self._push_delay
        self._push_delay = min(self._push_delay * 2, self.backoff_max)

    # -- in: the log to the store (a thread of its own, then the reactor) --------------------

    def _listen(self, cursor: int) -> None:
        delay = self.backoff_first
        while not self._stop.is_set():
            try:
                with psycopg.connect(**self.connect_args, autocommit=True) as conn:
                    postgres.migrate(conn)
                    conn.execute(f"LISTEN {postgres.CHANNEL}")
                    # Before saying so: a peer's failures pushed once we are up must be read.
                    failed = postgres.last_failure(conn) if self.counted is not None else 0
                    self.reactor.callFromThread(self._up)
                    delay = self.backoff_first
                    cursor = self._follow(conn, cursor, failed)
            except (psycopg.Error, OSError) as e:
                self.reactor.callFromThread(self._down, str(e))
                self._stop.wait(delay)
                delay = min(delay * 2, self.backoff_max)
            except Exception as e:  # a schema too new, or a bug: say so, keep trying
                self.reactor.callFromThread(self._down, str(e) or repr(e))
                self._stop.wait(self.backoff_max)

    def _follow(self, conn: psycopg.Connection[Any], cursor: int, failed: int) -> int:
        """Read the log after ``cursor`` (and the failures after ``failed``) at every
        notification, and at least every ``wait`` seconds; heartbeat every ``heartbeat``
        seconds. Returns at stop; raises when the connection fails."""
        beat = 0.0
        while not self._stop.is_set():
            while events := postgres.fetch(conn, cursor, _BATCH):
                cursor = events[-1].seq
                self.reactor.callFromThread(self._received, events, cursor)
            while self.counted is not None:
                read, failures = postgres.fetch_failures(conn, failed, self.node, _BATCH)
                if read == failed:
                    break
                failed = read
                if failures:
                    self.reactor.callFromThread(self._counted, failures)
            if time.monotonic() - beat >= self.heartbeat_every:
                beat = time.monotonic()
                nodes = postgres.heartbeat(conn, self.node, self.state.backlog, __version__)
                self.reactor.callFromThread(self._nodes, nodes)
            for _ in conn.notifies(timeout=self.wait, stop_after=1):
                pass
        return cursor

    def _received(self, events: Sequence[BanEvent], cursor: int) -> None:
        if not self.running:
            return
        started, ended = self.store.adopt(events, cursor, self.reactor.seconds())
        if started or ended:
            self.state.adopted += len(started) + len(ended)
            self.adopt(started, ended)

    def _counted(self, failures: Sequence[CountedFailure]) -> None:
        if not self.running or self.counted is None:
            return
        self.state.failures_received += len(failures)
        self.counted(failures)

    def _nodes(self, nodes: list[dict[str, Any]]) -> None:
        """A heartbeat went through: the database answers (again, if the heartbeat's age or a
        push had said otherwise)."""
        self.state.nodes = nodes
        self.state.beat_at = self.reactor.seconds()
        self._up()

    def _up(self) -> None:
        if not self.state.connected:
            log.info(
                "cluster: connected to {where} as node {node}; {backlog} local changes to push",
                where=self.where,
                node=self.node,
                backlog=self.state.backlog,
            )
        self.state.connected = True
        self.state.last_error = None
        self._answered_at = self.reactor.seconds()
        self._push_after = 0.0

    def _down(self, error: str) -> None:
        error = " ".join(error.split())  # libpq's messages span lines; the log's are one
        self._reconnect = True
        if self.state.connected or self.state.last_error is None:
            log.warn(
                "cluster: {where} is unreachable ({error}); banning locally, changes are"
                " queued in the local store and pushed when it returns",
                where=self.where,
                error=error,
            )
        self.state.connected = False
        self.state.last_error = error


@dataclass(frozen=True, slots=True)
class _Job:
    """One push: a batch of the outbox and of the queued failures; ``reconnect``: on a new
    connection (the database was lost since the last one)."""

    events: Sequence[BanEvent]
    failures: Sequence[CountedFailure]
    reconnect: bool
