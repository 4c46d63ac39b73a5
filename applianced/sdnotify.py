"""What the daemon tells systemd: the sd_notify protocol and the reactor-driven loops around it.

The protocol (sd_notify(3)): one datagram per message, ``KEY=VALUE`` lines, sent to the
``AF_UNIX`` ``SOCK_DGRAM`` socket named by ``$NOTIFY_SOCKET`` (a path, or an abstract name when it
starts with ``@``). Without ``$NOTIFY_SOCKET`` (not started by systemd) every call does nothing.
It is small enough to own rather than depend on a package for (the PyPI ones are either
unmaintained, ``sdnotify``, or bind libsystemd, ``systemd-python``/``cysystemd``, which needs a C
build against ``libsystemd-dev``).

``Supervisor`` is what ``service.main`` wires: READY=1 once bans are restored and listeners are
open, STATUS= with counts (the text: ``stats.status_line``) every ``STATUS_INTERVAL`` seconds,
WATCHDOG=1 from a reactor ``LoopingCall`` at half of ``$WATCHDOG_USEC`` (a stuck reactor stops
pinging and systemd restarts it), RELOADING=1 (with MONOTONIC_USEC=) and READY=1 around a
reload, STOPPING=1 at shutdown. Time comes from the injected reactor, so tests drive it with
``task.Clock``.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Mapping
from typing import TypeVar

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

__all__ = [
    "STATUS_INTERVAL",
    "SdNotifier",
    "Supervisor",
    "watchdog_interval",
]

log = Logger()

STATUS_INTERVAL = 30.0
"""Seconds between two STATUS= updates."""

T = TypeVar("T")


def _address(name: str) -> str | bytes:
    """The socket address of ``$NOTIFY_SOCKET``: '@' names the Linux abstract namespace."""
    if name.startswith("@"):
        return b"\0" + name[1:].encode()
    return name


class SdNotifier:
    """Sends sd_notify messages to ``socket_name`` (``$NOTIFY_SOCKET``); a no-op without one.

    A send never raises: a daemon must not stop because its supervisor went away. Failures are
    logged once, then counted in ``errors``."""

    def __init__(self, socket_name: str | None) -> None:
        self.socket_name = socket_name or None
        self.errors = 0

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> SdNotifier:
        env = os.environ if environ is None else environ
        return cls(env.get("NOTIFY_SOCKET"))

    @property
    def enabled(self) -> bool:
        return self.socket_name is not None

    def notify(self, *lines: str) -> bool:
        """Send ``lines`` (``"READY=1"``, ``"STATUS=..."``) as one datagram; True if sent."""
        if self.socket_name is None:
            return False
        data = "\n".join(lines).encode()
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
                s.connect(_address(self.socket_name))
                s.sendall(data)
        except OSError as e:
            self.errors += 1
            if self.errors == 1:
                log.warn(
                    "cannot notify systemd on {socket}: {error}",
                    socket=self.socket_name,
                    error=str(e),
                )
            return False
        return True

    def ready(self, status: str | None = None) -> bool:
        return self.notify("READY=1", *_status(status))

    def reloading(self, status: str | None = None) -> bool:
        # MONOTONIC_USEC: systemd 253+ (Type=notify-reload) matches it against the time it sent
        # the reload signal; older systemd ignores the field.
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.notify("RELOADING=1", f"MONOTONIC_USEC={usec}", *_status(status))

    def stopping(self, status: str | None = None) -> bool:
        return self.notify("STOPPING=1", *_status(status))

    def status(self, text: str) -> bool:
        return self.notify(*_status(text))

    def watchdog(self) -> bool:
        return self.notify("WATCHDOG=1")


def _status(text: str | None) -> list[str]:
    # One message is KEY=VALUE lines: a newline inside STATUS would start a bogus field.
    return [] if text is None else ["STATUS=" + " ".join(text.split())]


def watchdog_interval(
    environ: Mapping[str, str] | None = None, pid: int | None = None
) -> float | None:
    """Seconds between WATCHDOG=1 pings (half of ``$WATCHDOG_USEC``), or None when systemd wants
    none: unset, not a positive integer, or ``$WATCHDOG_PID`` names another process."""
    env = os.environ if environ is None else environ
    watchdog_pid = env.get("WATCHDOG_PID")
    if watchdog_pid and watchdog_pid != str(os.getpid() if pid is None else pid):
        return None
    try:
        usec = int(env.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    if usec <= 0:
        return None
    return usec / 2 / 1_000_000


class Supervisor:
    """The daemon's side of the unit's Type=notify and WatchdogSec=, driven by ``clock``.

    ``status`` returns the current STATUS= text (it is called on the reactor)."""

    def __init__(
        self,
        notifier: SdNotifier,
        clock: IReactorTime,
        status: Callable[[], str],
        watchdog: float | None = None,
        status_interval: float = STATUS_INTERVAL,
    ) -> None:
        self.notifier = notifier
        self.clock = clock
        self.status = status
        self.watchdog = watchdog
        self.status_interval = status_interval
        self._loops: list[LoopingCall] = []

    def started(self) -> None:
        """Call once bans are restored and listeners are open: READY=1, then the loops."""
        self.notifier.ready(self.status())
        if not self.notifier.enabled:
            return
        if self.watchdog is not None:
            self._start(self.notifier.watchdog, self.watchdog)
        self._start(lambda: self.notifier.status(self.status()), self.status_interval, now=False)

    def _start(self, f: Callable[[], object], interval: float, now: bool = True) -> None:
        loop = LoopingCall(f)
        loop.clock = self.clock
        loop.start(interval, now=now)
        self._loops.append(loop)

    def reload(self, work: Callable[[], T]) -> T:
        """Run ``work`` (the reload) between RELOADING=1 and READY=1 with a fresh STATUS=. When
        ``work`` returns a Deferred, READY=1 waits for it. READY=1 is sent also when the reload
        fails (raises, or its Deferred fails): the running config stays, the service is up."""
        self.notifier.reloading("reloading the configuration")
        try:
            result = work()
        except BaseException as e:
            self._refused(e)
            raise
        if isinstance(result, Deferred):

            def done(value: object) -> object:
                self.notifier.ready(self.status())
                return value

            def failed(reason: Failure) -> Failure:
                self._refused(reason.value)
                return reason

            result.addCallbacks(done, failed)
        else:
            self.notifier.ready(self.status())
        return result

    def _refused(self, error: BaseException | None) -> None:
        self.notifier.ready(f"reload refused: {error}; running on the previous configuration")

    def stopping(self) -> None:
        for loop in self._loops:
            if loop.running:
                loop.stop()
        self._loops.clear()
        self.notifier.stopping("stopping")
