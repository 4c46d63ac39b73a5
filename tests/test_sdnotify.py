"""The sd_notify protocol against a real AF_UNIX datagram socket the test owns, and the
Supervisor's READY/STATUS/WATCHDOG/RELOADING/STOPPING sequence driven by ``task.Clock``."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from twisted.internet.defer import Deferred, fail
from twisted.internet.task import Clock

from applianced.sdnotify import SdNotifier, Supervisor, watchdog_interval
from applianced.stats import status_line


class NotifySocket:
    """The systemd side: a bound AF_UNIX SOCK_DGRAM socket; ``name`` goes in $NOTIFY_SOCKET."""

    def __init__(self, name: str, address: str | bytes) -> None:
        self.name = name
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(address)

    def messages(self) -> list[dict[str, str]]:
        """Every datagram received so far, each parsed into its KEY=VALUE fields."""
        out = []
        self.sock.setblocking(False)
        while True:
            try:
                data = self.sock.recv(4096)
            except BlockingIOError:
                return out
            out.append(dict(line.split("=", 1) for line in data.decode().split("\n")))

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def sock(tmp_path: Path) -> Iterator[NotifySocket]:
    path = str(tmp_path / "notify.sock")
    s = NotifySocket(path, path)
    yield s
    s.close()


def test_ready_is_one_datagram_on_a_path_socket(sock: NotifySocket) -> None:
    """READY=1 and STATUS= arrive together in one datagram on a filesystem socket."""
    assert SdNotifier(sock.name).ready("3 jails")
    assert sock.messages() == [{"READY": "1", "STATUS": "3 jails"}]


def test_abstract_namespace_socket() -> None:
    """A $NOTIFY_SOCKET starting with '@' names a socket in the abstract namespace."""
    name = f"@applianced-test-{os.getpid()}-{time.monotonic_ns()}"
    s = NotifySocket(name, b"\0" + name[1:].encode())
    try:
        assert SdNotifier(name).watchdog()
        assert s.messages() == [{"WATCHDOG": "1"}]
    finally:
        s.close()


def test_from_environ_reads_notify_socket(sock: NotifySocket) -> None:
    """from_environ takes $NOTIFY_SOCKET; without it every call is a no-op returning False."""
    assert SdNotifier.from_environ({"NOTIFY_SOCKET": sock.name}).status("hello")
    assert sock.messages() == [{"STATUS": "hello"}]
    off = SdNotifier.from_environ({})
    assert not off.enabled
    assert not off.ready("x")
    assert off.errors == 0


def test_unreachable_socket_is_counted_not_raised(tmp_path: Path) -> None:
    """A supervisor that went away never stops the daemon: sends fail quietly and are counted."""
    n = SdNotifier(str(tmp_path / "nobody-listens"))
    assert not n.ready()
    assert not n.watchdog()
    assert n.errors == 2


def test_status_is_one_line(sock: NotifySocket) -> None:
    """A newline in the STATUS text cannot inject another field into the message."""
    SdNotifier(sock.name).status("bad config\nREADY=1")
    assert sock.messages() == [{"STATUS": "bad config READY=1"}]


def test_reloading_carries_monotonic_usec(sock: NotifySocket) -> None:
    """RELOADING=1 comes with MONOTONIC_USEC= (CLOCK_MONOTONIC, microseconds) for systemd 253+."""
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    SdNotifier(sock.name).reloading()
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    [msg] = sock.messages()
    assert msg["RELOADING"] == "1"
    assert before <= int(msg["MONOTONIC_USEC"]) <= after


def test_watchdog_interval_is_half_of_watchdog_usec() -> None:
    """WATCHDOG_USEC=30 s gives a ping every 15 s; WATCHDOG_PID must be ours when set."""
    assert watchdog_interval({"WATCHDOG_USEC": "30000000"}) == 15.0
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "42"}, pid=42) == 15.0
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "43"}, pid=42) is None
    assert watchdog_interval({}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "0"}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "soon"}) is None


def supervisor(sock: NotifySocket, clock: Clock, watchdog: float | None = 5.0) -> Supervisor:
    counts = iter(range(100))
    return Supervisor(
        SdNotifier(sock.name),
        clock,
        lambda: status_line(2, 0, next(counts)),
        watchdog=watchdog,
        status_interval=30.0,
    )


def test_started_sends_ready_then_watchdog_and_status_on_cadence(sock: NotifySocket) -> None:
    """READY=1 with counts first, WATCHDOG=1 at once and every interval, STATUS= every 30 s."""
    clock = Clock()
    supervisor(sock, clock).started()
    assert sock.messages() == [
        {"READY": "1", "STATUS": "2 jails, 0 active bans, 0 messages received"},
        {"WATCHDOG": "1"},
    ]
    clock.advance(4.9)
    assert sock.messages() == []
    clock.advance(0.1)
    assert sock.messages() == [{"WATCHDOG": "1"}]
    for _ in range(5):
        clock.advance(5.0)
    got = sock.messages()  # at t=30 both loops fire, in either order
    assert got.count({"WATCHDOG": "1"}) == 5
    assert {"STATUS": "2 jails, 0 active bans, 1 message received"} in got
    assert len(got) == 6


def test_no_watchdog_without_watchdog_usec(sock: NotifySocket) -> None:
    """Without WatchdogSec= there are no pings, only READY=1 and the STATUS= updates."""
    clock = Clock()
    supervisor(sock, clock, watchdog=None).started()
    clock.advance(30.0)
    assert [set(m) for m in sock.messages()] == [{"READY", "STATUS"}, {"STATUS"}]


def test_not_under_systemd_schedules_nothing() -> None:
    """Without $NOTIFY_SOCKET the supervisor starts no loop on the reactor."""
    clock = Clock()
    Supervisor(SdNotifier(None), clock, lambda: "x", watchdog=5.0).started()
    assert clock.getDelayedCalls() == []


def test_reload_is_wrapped_in_reloading_and_ready(sock: NotifySocket) -> None:
    """RELOADING=1 before the reload's work, READY=1 with fresh counts after it."""
    clock = Clock()
    sup = supervisor(sock, clock, watchdog=None)
    sup.started()
    sock.messages()
    seen: list[list[dict[str, str]]] = []
    assert sup.reload(lambda: seen.append(sock.messages()) or "done") == "done"
    [[during]] = seen
    assert during["RELOADING"] == "1"
    assert "MONOTONIC_USEC" in during
    assert sock.messages() == [
        {"READY": "1", "STATUS": "2 jails, 0 active bans, 1 message received"}
    ]


def test_refused_reload_still_sends_ready(sock: NotifySocket) -> None:
    """A refused reload re-enters READY=1 (the old config runs on) and the error propagates."""
    sup = supervisor(sock, Clock(), watchdog=None)

    def broken() -> None:
        raise ValueError("appliance.toml:3: bad key")

    with pytest.raises(ValueError):
        sup.reload(broken)
    reloading, ready = sock.messages()
    assert reloading["RELOADING"] == "1"
    assert ready["READY"] == "1"
    assert "reload refused: appliance.toml:3: bad key" in ready["STATUS"]


def test_stopping_sends_stopping_and_ends_the_loops(sock: NotifySocket) -> None:
    """STOPPING=1 at shutdown; no WATCHDOG=1 or STATUS= after it."""
    clock = Clock()
    sup = supervisor(sock, clock)
    sup.started()
    sock.messages()
    sup.stopping()
    assert sock.messages() == [{"STOPPING": "1", "STATUS": "stopping"}]
    clock.advance(60.0)
    assert sock.messages() == []
    assert clock.getDelayedCalls() == []


def test_reload_returning_a_deferred_sends_ready_when_it_fires(sock: NotifySocket) -> None:
    """An asynchronous reload: READY=1 comes when its Deferred fires, not when it is returned."""
    sup = supervisor(sock, Clock(), watchdog=None)
    pending: Deferred[str] = Deferred()
    assert sup.reload(lambda: pending) is pending
    [reloading] = sock.messages()
    assert reloading["RELOADING"] == "1"
    pending.callback("ok")
    assert sock.messages() == [
        {"READY": "1", "STATUS": "2 jails, 0 active bans, 0 messages received"}
    ]
    assert pending.result == "ok"


def test_reload_whose_deferred_fails_still_sends_ready(sock: NotifySocket) -> None:
    """A failed asynchronous reload re-enters READY=1 saying why; the failure goes on."""
    sup = supervisor(sock, Clock(), watchdog=None)
    result = sup.reload(lambda: fail(ValueError("appliance.toml:7: bad value")))
    errors: list[str] = []
    result.addErrback(lambda f: errors.append(str(f.value)))
    assert errors == ["appliance.toml:7: bad value"]
    _, ready = sock.messages()
    assert ready["READY"] == "1"
    assert ready["STATUS"].startswith("reload refused: appliance.toml:7: bad value")
