"""Network namespaces for tests that touch the kernel: create them, run things inside, probe them,
and always remove them.

Everything that could change a firewall runs in a child process started with ``ip netns exec``,
so the root namespace's ruleset is never touched: libnftables talks netlink in the namespace of
the process that calls it. ``remote`` keeps an object (an Enforcer) alive in such a child and
forwards method calls to it (pickles over a pipe: the child is ours, the data trusted).

Names are unique per process and call (prefix, pid, counter), so parallel runs do not clash.
Every helper waits by polling with a deadline, never by sleeping a fixed time.

Meant for tests/enforcement/ and tests/e2e/; run as ``python -m tests.netns`` it is the remote
agent (see ``remote``).
"""

from __future__ import annotations

import functools
import importlib
import itertools
import os
import pickle
import select
import shutil
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

__all__ = [
    "Listener",
    "Remote",
    "Topology",
    "netns",
    "netns_missing",
    "ns_exec",
    "ns_python",
    "remote",
    "tcp_connects",
    "tcp_listener",
    "tcp_probe",
    "topology",
    "wait_until",
]

REPO = Path(__file__).resolve().parents[1]
_names = itertools.count()


def netns_missing() -> str | None:
    """Why namespace tests cannot run here (not root, no ip or nft), or None if they can."""
    if os.geteuid() != 0:
        return "needs root (network namespaces, nftables)"
    for tool in ("ip", "nft"):
        if shutil.which(tool) is None:
            return f"needs the {tool} command"
    return None


def _unique(prefix: str) -> str:
    return f"{prefix}-{os.getpid()}-{next(_names)}"


def _run(argv: Sequence[str], timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    p = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, check=False)
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({p.returncode}): {p.stderr.strip()}")
    return p


@contextmanager
def netns(prefix: str = "appl") -> Iterator[str]:
    """A fresh network namespace with loopback up; deleted on exit, whatever happened."""
    name = _unique(prefix)
    _run(["ip", "netns", "add", name])
    try:
        _run(["ip", "-n", name, "link", "set", "lo", "up"])
        yield name
    finally:
        subprocess.run(["ip", "netns", "delete", name], capture_output=True, check=False)


def ns_exec(
    ns: str, *argv: str, timeout: float = 30.0, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run a command inside ``ns``; its output as text."""
    cmd = ["ip", "netns", "exec", ns, *argv]
    if check:
        return _run(cmd, timeout)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)


def ns_python(
    ns: str, code: str, *args: str, timeout: float = 30.0, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run a Python snippet inside ``ns`` with this interpreter (``sys.argv[1:]`` = ``args``)."""
    return ns_exec(ns, sys.executable, "-c", code, *args, timeout=timeout, check=check)


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``condition`` until it holds; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"still not true after {timeout:.1f} s: {what}")
        time.sleep(0.02)


# ---------------------------------------------------------------------------------------------
# Two namespaces and a cable.


@dataclass(frozen=True, slots=True)
class Topology:
    """A server and an attacker namespace joined by a veth pair (RFC 5737 / RFC 3849 addresses)."""

    server: str
    attacker: str
    server_v4: str = "192.0.2.1"
    attacker_v4: str = "192.0.2.2"
    server_v6: str = "2001:db8::1"
    attacker_v6: str = "2001:db8::2"


@contextmanager
def topology(prefix: str = "appl") -> Iterator[Topology]:
    """Server and attacker namespaces, each with ``veth0`` up and addressed, both ways
    reachable; both namespaces are deleted on exit."""
    with netns(f"{prefix}-s") as server, netns(f"{prefix}-a") as attacker:
        t = Topology(server, attacker)
        # Created inside the namespaces: no interface ever appears in the root namespace.
        _run(
            [
                "ip",
                "-n",
                server,
                "link",
                "add",
                "veth0",
                "type",
                "veth",
                "peer",
                "name",
                "veth0",
                "netns",
                attacker,
            ]
        )
        for ns, v4, v6 in (
            (server, t.server_v4, t.server_v6),
            (attacker, t.attacker_v4, t.attacker_v6),
        ):
            _run(["ip", "-n", ns, "addr", "add", f"{v4}/24", "dev", "veth0"])
            _run(["ip", "-n", ns, "addr", "add", f"{v6}/64", "dev", "veth0", "nodad"])
            _run(["ip", "-n", ns, "link", "set", "veth0", "up"])
        for ns in (server, attacker):
            wait_until(functools.partial(_link_up, ns), 10.0, f"veth0 up in {ns}")
        yield t


def _link_up(ns: str) -> bool:
    out = _run(["ip", "-n", ns, "-o", "link", "show", "veth0"]).stdout
    return "LOWER_UP" in out and ",UP" in out


# ---------------------------------------------------------------------------------------------
# TCP probes.

_CONNECT = """
import socket, sys
try:
    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=float(sys.argv[3])).close()
except OSError as e:
    print(type(e).__name__)
    sys.exit(1)
print("ok")
"""


def tcp_probe(ns: str, addr: str, port: int, timeout: float = 1.0) -> str:
    """Try a TCP connection from inside ``ns`` to ``addr``:``port``: "ok", or the name of the
    exception (a dropped SYN gives "TimeoutError" after ``timeout`` seconds, a reject
    "ConnectionRefusedError" at once)."""
    p = ns_python(ns, _CONNECT, addr, str(port), str(timeout), timeout=timeout + 30, check=False)
    return p.stdout.strip() or f"no answer (exit {p.returncode}): {p.stderr.strip()}"


def tcp_connects(ns: str, addr: str, port: int, timeout: float = 1.0) -> bool:
    """Whether a TCP connection from inside ``ns`` to ``addr``:``port`` opens within
    ``timeout`` seconds."""
    return tcp_probe(ns, addr, port, timeout) == "ok"


_LISTEN = """
import selectors, socket, sys
sel = selectors.DefaultSelector()
for spec in sys.argv[1:]:
    addr, port = spec.rsplit(":", 1)
    s = socket.socket(socket.AF_INET6 if ":" in addr else socket.AF_INET)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((addr, int(port)))
    s.listen(64)
    sel.register(s, selectors.EVENT_READ)
print("ready", flush=True)
while True:
    for key, _ in sel.select():
        conn, _ = key.fileobj.accept()
        conn.close()
"""


@dataclass(frozen=True, slots=True)
class Listener:
    """A TCP accept loop in a namespace (each connection accepted, then closed)."""

    ns: str
    endpoints: tuple[tuple[str, int], ...]
    pid: int


@contextmanager
def tcp_listener(ns: str, endpoints: Sequence[tuple[str, int]]) -> Iterator[Listener]:
    """Listen on every (address, port) inside ``ns`` until the block ends; ready on entry."""
    specs = [f"{a}:{p}" for a, p in endpoints]
    proc = subprocess.Popen(
        ["ip", "netns", "exec", ns, sys.executable, "-c", _LISTEN, *specs],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = _readline(proc.stdout, 15.0)
        if line.strip() != "ready":
            err = proc.stderr.read() if proc.stderr and proc.poll() is not None else ""
            raise RuntimeError(f"listener in {ns} did not start: {line!r} {err}")
        yield Listener(ns, tuple(endpoints), proc.pid)
    finally:
        _stop(proc)


def _readline(stream: IO[str], timeout: float) -> str:
    ready, _, _ = select.select([stream], [], [], timeout)
    if not ready:
        raise TimeoutError(f"no output within {timeout} s")
    return stream.readline()


def _stop(proc: subprocess.Popen[Any]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(5.0)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5.0)
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()


# ---------------------------------------------------------------------------------------------
# An object living in a namespace.

_LEN = struct.Struct("!Q")


class Remote:
    """A proxy for an object in a child process inside a namespace. ``proxy.method(*args)``
    runs the method there and returns its result or raises its exception; ``timed`` also
    returns the seconds the call took in the child (transfer excluded)."""

    def __init__(self, proc: subprocess.Popen[bytes], ns: str, timeout: float) -> None:
        self._proc = proc
        self.ns = ns
        self.timeout = timeout

    def __getattr__(self, name: str) -> Callable[..., Any]:
        if name.startswith("_"):
            raise AttributeError(name)
        return lambda *args, **kwargs: self._request(("call", name, args, kwargs))[0]

    def get(self, attribute: str) -> Any:
        """The value of an attribute of the remote object."""
        return self._request(("get", attribute, (), {}))[0]

    def timed(self, method: str, *args: Any, **kwargs: Any) -> tuple[Any, float]:
        result, seconds = self._request(("call", method, args, kwargs))
        return result, seconds

    def _request(self, message: tuple[str, str, tuple[Any, ...], dict[str, Any]]) -> Any:
        assert self._proc.stdin is not None and self._proc.stdout is not None
        data = pickle.dumps(message)
        self._proc.stdin.write(_LEN.pack(len(data)) + data)
        self._proc.stdin.flush()
        status, value, seconds = pickle.loads(_read_frame(self._proc.stdout, self.timeout))
        if status == "err":
            raise value
        return value, seconds


def _read_frame(stream: IO[bytes], timeout: float) -> bytes:
    deadline = time.monotonic() + timeout
    fd = stream.fileno()
    buf = b""
    need = _LEN.size
    header = True
    while True:
        while len(buf) < need:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise TimeoutError(f"the remote agent did not answer within {timeout} s")
            chunk = os.read(fd, need - len(buf))
            if not chunk:
                raise EOFError("the remote agent exited")
            buf += chunk
        if not header:
            return buf
        (need,) = _LEN.unpack(buf)
        buf, header = b"", False


@contextmanager
def remote(
    ns: str, factory: str, *args: Any, timeout: float = 60.0, **kwargs: Any
) -> Iterator[Any]:
    """An object built by ``factory`` ("package.module:Name") inside ``ns``; the child process
    ends with the block."""
    proc = subprocess.Popen(
        ["ip", "netns", "exec", ns, sys.executable, "-m", "tests.netns"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        cwd=REPO,
        env={**os.environ, "APPLIANCED_TEST_PARENT_NETNS": str(_netns_inode())},
    )
    try:
        agent = Remote(proc, ns, timeout)
        agent._request(("new", factory, args, kwargs))
        yield agent
    finally:
        _stop(proc)


def _netns_inode() -> int:
    return os.stat("/proc/self/ns/net").st_ino


def _serve(stdin: IO[bytes], stdout: IO[bytes]) -> None:
    """The agent loop: build one object, then run calls on it until stdin closes."""
    if str(_netns_inode()) == os.environ.get("APPLIANCED_TEST_PARENT_NETNS"):
        raise SystemExit("refusing to run: this process is in its parent's network namespace")
    target: Any = None
    while True:
        header = stdin.read(_LEN.size)
        if len(header) < _LEN.size:
            return
        kind, name, args, kwargs = pickle.loads(stdin.read(_LEN.unpack(header)[0]))
        start = time.perf_counter()
        try:
            if kind == "new":
                module, _, attr = name.partition(":")
                target = getattr(importlib.import_module(module), attr)(*args, **kwargs)
                value = None
            elif kind == "get":
                value = getattr(target, name)
            else:
                value = getattr(target, name)(*args, **kwargs)
            reply = ("ok", value, time.perf_counter() - start)
        except Exception as e:  # sent back and raised in the parent
            reply = ("err", e, time.perf_counter() - start)
        try:
            data = pickle.dumps(reply)
        except Exception as e:
            data = pickle.dumps(("err", RuntimeError(f"unpicklable reply: {e!r}"), 0.0))
        stdout.write(_LEN.pack(len(data)) + data)
        stdout.flush()


if __name__ == "__main__":
    # Frames go to the original stdout; anything else printing goes to stderr.
    frames = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    _serve(sys.stdin.buffer, frames)
