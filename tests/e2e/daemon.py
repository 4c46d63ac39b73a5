"""Run the real ``applianced`` process for end-to-end tests, and talk to it with the real
``appliancectl``. Waiting is polling with a deadline, never a fixed sleep."""

from __future__ import annotations

import json
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

BIN = Path(sys.executable).parent

# What every end-to-end config starts with: state and control socket in the test's work
# directory, only 127.0.0.1 may send, UDP (LOOPBACK_UDP) or UDP and TCP (LOOPBACK) on {port}.
LOOPBACK_UDP = """\
[daemon]
state_dir = "state"
control_socket = "control.sock"

[receiver]
allowed_senders = ["127.0.0.1/32"]

[[listeners]]
transport = "udp"
address = "127.0.0.1"
port = {port}
"""
LOOPBACK = (
    LOOPBACK_UDP
    + """
[[listeners]]
transport = "tcp"
address = "127.0.0.1"
port = {port}
"""
)
# The jail most end-to-end configs end with: sshd, 3 failures, banned for an hour.
SSHD_JAIL = """
[defaults]
bantime = "1h"
maxretry = 3

[jails.sshd]
filter = "sshd"
ports = [22]
"""
T = TypeVar("T")


def free_port() -> int:
    """A port free for both UDP and TCP on 127.0.0.1, below the kernel's ephemeral range.

    A port the kernel handed out for ``bind(0)`` lies in the ephemeral range, where it can be
    taken again, before the daemon binds it, as the source port of any outgoing connection of
    a test running in parallel (seen: "Address already in use" on a busy suite). Ports below
    the range are never chosen by the kernel; picking at random keeps workers apart."""
    low = _ephemeral_low()
    for _ in range(200):
        port = random.randrange(max(1024, low - 12_000), low)
        with (
            socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t,
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u,
        ):
            try:
                t.bind(("127.0.0.1", port))
                u.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port")


def _ephemeral_low() -> int:
    """The first port of net.ipv4.ip_local_port_range (32768 on Linux by default)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def wait_for(what: str, probe: Callable[[], T | None], timeout: float = 15.0) -> T:
    """Poll ``probe`` until it returns something truthy, or fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


class Daemon:
    """One applianced process on a config written into ``workdir``."""

    def __init__(
        self,
        workdir: Path,
        config_text: str,
        args: Sequence[str] = ("--dry-run",),
        prefix: Sequence[str] = (),
        bindir: Path = BIN,
    ) -> None:
        """``prefix`` runs the daemon and ``appliancectl`` under another command (``ip netns
        exec NS``, ``setpriv``); ``bindir`` is where both are (this venv's, or an installed one)."""
        self.workdir = workdir
        self.config = workdir / "appliance.toml"
        self.config.write_text(config_text)
        self.socket = workdir / "control.sock"
        self.args = list(args)
        self.prefix = list(prefix)
        self.bindir = bindir
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = workdir / "applianced.log"

    def start(self) -> Daemon:
        logf = self.log.open("ab")
        argv = [str(self.bindir / "applianced"), "--config", str(self.config), *self.args]
        self.proc = subprocess.Popen(
            [*self.prefix, *argv],
            stdout=logf,
            stderr=subprocess.STDOUT,
        )
        logf.close()
        wait_for("applianced to answer on its control socket", self._answers)
        return self

    def _answers(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"applianced exited with {self.proc.returncode}:\n{self.output}")
        return self.ctl_rc("status", "--json")[0] == 0

    @property
    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def ctl_rc(self, *args: str) -> tuple[int, str, str]:
        done = subprocess.run(
            [*self.prefix, str(self.bindir / "appliancectl"), "--socket", str(self.socket), *args],
            capture_output=True,
            text=True,
            timeout=30,
        )
        return done.returncode, done.stdout, done.stderr

    def ctl(self, *args: str) -> Any:
        """Run appliancectl with --json and return the parsed output; fail on non-zero exit."""
        rc, out, err = self.ctl_rc(*args, "--json")
        assert rc == 0, f"appliancectl {' '.join(args)} exited {rc}: {err}"
        return json.loads(out)

    def banned(self) -> set[str]:
        """The addresses (networks) banned now, in any jail."""
        return {b["address"] for b in self.ctl("banned")}

    def receiver(self) -> dict[str, Any]:
        """The receiver's counters from `appliancectl status`."""
        stats: dict[str, Any] = self.ctl("status")["receiver"]
        return stats

    def kill(self, sig: int = signal.SIGKILL) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        return self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.kill(signal.SIGTERM)


def logger(
    port: int,
    message: str,
    *,
    tag: str,
    transport: str = "udp",
    extra: Sequence[str] = (),
    prefix: Sequence[str] = (),
) -> None:
    """Send one message with util-linux logger, the way an admin would test by hand
    (``prefix`` runs it elsewhere, e.g. ``ip netns exec NS``)."""
    cmd = [*prefix, "logger", "--server", "127.0.0.1", "--port", str(port), f"--{transport}"]
    subprocess.run([*cmd, "--tag", tag, *extra, message], check=True, timeout=10)


def sasl_failures(port: int, address: str, n: int, ns: str) -> None:
    """``n`` postfix SASL failures of ``address``, sent with ``logger`` (RFC 3164 over UDP) from
    inside the network namespace ``ns`` to its daemon on ``port``."""
    for _ in range(n):
        logger(
            port,
            f"warning: unknown[{address}]: SASL LOGIN authentication failed: UGFzc3dvcmQ6",
            tag="postfix/smtpd",
            extra=("--rfc3164",),
            prefix=("ip", "netns", "exec", ns),
        )
