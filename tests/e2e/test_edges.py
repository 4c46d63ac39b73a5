"""End to end: the stream listeners' edges (issue 15) in the real daemon (--dry-run).

Peers outside allowed_senders are closed on accept, before any TLS, so that hundreds of them do
not take the descriptors the certified mail server and the control socket need; the daemon runs
under a low RLIMIT_NOFILE (``prlimit``) to show it. Handshake and first-frame deadlines close
connections that hold a slot without sending; the last LF-framed line of a closing connection
is read. Attackers are other loopback addresses (127.0.1.x); counts are bounded, waits poll
with a deadline.
"""

from __future__ import annotations

import json
import os
import socket
import ssl
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from tests.e2e.daemon import LOOPBACK, LOOPBACK_UDP, SSHD_JAIL, Daemon, free_port, wait_for
from tests.e2e.test_limits import closed_by_peer
from tests.e2e.test_tls import FAILURE, frame, tls_init
from tests.netns import netns, netns_missing

NOFILE = 128  # the daemon's descriptor limit in these tests
ATTACKERS = 300  # connections held open by refused peers: more than NOFILE

TLS_CONFIG = (
    LOOPBACK_UDP.replace('allowed_senders = ["127.0.0.1/32"]', "{receiver}")
    + """
[[listeners]]
transport = "tls"
address = "127.0.0.1"
port = {tls_port}
cert = "tls/server.pem"
key = "tls/server.key"
client_ca = "tls/ca.pem"
client_names = ["mx1.example.org"]
"""
    + SSHD_JAIL
)


def start_tls(
    tmp_path: Path, receiver: str = 'allowed_senders = ["127.0.0.1/32"]'
) -> tuple[Daemon, int]:
    tls_init(tmp_path / "tls", "mx1.example.org")
    tls_port = free_port()
    text = TLS_CONFIG.format(port=free_port(), tls_port=tls_port, receiver=receiver)
    d = Daemon(tmp_path, text, prefix=("prlimit", f"--nofile={NOFILE}:{NOFILE}"))
    return d.start(), tls_port


def certified(tmp_path: Path) -> ssl.SSLContext:
    """The mail server's TLS client: the certificate `appliancectl tls init` made for it."""
    pki = tmp_path / "tls"
    context = ssl.create_default_context(cafile=str(pki / "ca.pem"))
    client = pki / "client-mx1.example.org"
    context.load_cert_chain(f"{client}.pem", f"{client}.key")
    return context


def send_tls_failures(d: Daemon, port: int, context: ssl.SSLContext, address: str) -> None:
    """Three failures of ``address`` over one TLS connection, closed once the daemon read
    them (a close with the server's session tickets unread is a reset, which may discard
    what the daemon had not read yet)."""
    received = d.receiver()["received_tls"]
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as s,
    ):
        s.sendall(b"".join(frame(FAILURE.format(address=address)) for _ in range(3)))
        wait_for("the failures read", lambda: d.receiver()["received_tls"] == received + 3)


def hold(stack: ExitStack, port: int, n: int) -> list[socket.socket]:
    """``n`` connections to ``port``, each from its own address from 127.0.1.2 on, kept open
    until ``stack`` closes."""
    held = []
    for i in range(1, n + 1):
        s = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
        s.settimeout(10)
        s.bind((f"127.0.{1 + i // 250}.{1 + i % 250}", 0))
        s.connect(("127.0.0.1", port))
        held.append(s)
    return held


def answers(d: Daemon) -> dict[str, int] | None:
    """The receiver's counters, or None while the control socket does not answer."""
    rc, out, _ = d.ctl_rc("status", "--json")
    if rc != 0:
        return None
    stats: dict[str, int] = json.loads(out)["receiver"]
    return stats


def descriptors(d: Daemon) -> int:
    assert d.proc is not None
    return len(os.listdir(f"/proc/{d.proc.pid}/fd"))


@pytest.fixture
def no_tracebacks() -> Iterator[list[Daemon]]:
    daemons: list[Daemon] = []
    yield daemons
    for d in daemons:
        d.stop()
        assert "Unhandled Error" not in d.output and "Traceback" not in d.output


def test_refused_peers_hold_no_descriptor(tmp_path: Path, no_tracebacks: list[Daemon]) -> None:
    """300 connections from outside allowed_senders to a TLS listener, held open, against a
    daemon allowed 128 descriptors: each is closed at accept (no TLS handshake), counted, and
    logged without a traceback; the control socket answers and the certified mail server's
    failures still ban."""
    d, tls_port = start_tls(tmp_path)
    no_tracebacks.append(d)
    with ExitStack() as stack:
        held = hold(stack, tls_port, ATTACKERS)
        stats = wait_for(
            "every refused peer counted",
            lambda: (r := answers(d)) and r["refused_senders"] >= ATTACKERS and r,
        )
        assert stats["open_connections"] == 0 and stats["tls_refused"] == 0
        assert descriptors(d) < NOFILE // 2
        assert all(s.recv(1) == b"" for s in held[:10]), "a refused peer was kept open"
        send_tls_failures(d, tls_port, certified(tmp_path), "203.0.113.60")
        wait_for("the certified sender's ban", lambda: "203.0.113.60/32" in d.banned())


def test_allowed_peers_cannot_exhaust_descriptors(
    tmp_path: Path, no_tracebacks: list[Daemon]
) -> None:
    """Allowed peers that connect and never handshake, more of them than the daemon has
    descriptors: the connection budget (RLIMIT_NOFILE less a reserve) refuses the excess at
    accept, so the control socket keeps answering; the handshake deadline then frees the
    slots and the certified mail server bans."""
    d, tls_port = start_tls(
        tmp_path,
        'allowed_senders = ["127.0.0.0/8"]\nhandshake_timeout = "5s"\n'
        "max_connections_per_sender = 0",
    )
    no_tracebacks.append(d)
    with ExitStack() as stack:
        hold(stack, tls_port, ATTACKERS)
        assert answers(d) is not None, "the control socket does not answer"
        stats = wait_for(
            "every connection accepted or refused at the budget, the slots freed",
            lambda: (
                (r := answers(d))
                and r["connections"] + r["refused_connections_descriptors"] == ATTACKERS
                and r["open_connections"] == 0
                and r
            ),
            timeout=60,
        )
        assert stats["refused_connections_descriptors"] > 0
        assert stats["handshake_timeouts"] == stats["connections"]
        send_tls_failures(d, tls_port, certified(tmp_path), "203.0.113.61")
        wait_for("the certified sender's ban", lambda: "203.0.113.61/32" in d.banned())


def test_first_frame_deadline_closes_a_silent_connection(tmp_path: Path) -> None:
    """A TCP connection that sends no whole frame within first_frame_timeout is closed by the
    daemon and counted, though it sent the start of one."""
    text = LOOPBACK.format(port=(port := free_port())).replace(
        'allowed_senders = ["127.0.0.1/32"]',
        'allowed_senders = ["127.0.0.1/32"]\nfirst_frame_timeout = "1s"',
    )
    d = Daemon(tmp_path, text).start()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(b"<38>Nov 22")
            assert closed_by_peer(s, timeout=10)
        wait_for("the timeout counted", lambda: d.receiver()["first_frame_timeouts"] == 1)
    finally:
        d.stop()


def test_last_line_without_lf_is_read(tmp_path: Path) -> None:
    """Three connections that each send one failure line without its LF and close: the
    lines are read and the address is banned (``printf`` into ``nc`` does this)."""
    port = free_port()
    d = Daemon(tmp_path, LOOPBACK.format(port=port) + SSHD_JAIL).start()
    try:
        line = f"<38>Nov 22 10:00:01 mx1 sshd[42]: {FAILURE.format(address='203.0.113.62')}"
        for _ in range(3):
            with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
                s.sendall(line.encode())
        wait_for("the ban", lambda: "203.0.113.62/32" in d.banned())
        assert d.receiver()["frame_errors"] == 0
    finally:
        d.stop()


# Inside the test's namespace: 20 addresses of one /64 open 30 connections each and hold them;
# then the mail server, in another /64, sends three failures; the connections stay open until
# stdin closes.
PREFIX_CLIENTS = """
import socket, sys
port, line = int(sys.argv[1]), sys.argv[2].encode()
held = []
for i in range(1, 21):
    for _ in range(30):
        s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        s.settimeout(10)
        s.bind((f"2001:db8:0:1::{i:x}", 0))
        s.connect(("2001:db8::1", port))
        held.append(s)
with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as mail:
    mail.bind(("2001:db8:0:2::25", 0))
    mail.connect(("2001:db8::1", port))
    mail.sendall(line * 3)
print("sent", flush=True)
sys.stdin.read()
"""


@pytest.mark.skipif(netns_missing() is not None, reason=str(netns_missing()))
def test_one_ipv6_prefix_cannot_take_every_slot(tmp_path: Path) -> None:
    """The issue's report, in a namespace of the test's own: 20 addresses of one /64 opening
    30 connections each share the /64's 32 connections (connection_prefix_v6 = 64), so the
    mail server of another /64 still gets a slot and its failures ban."""
    port = free_port()
    text = f"""\
[daemon]
state_dir = "state"
control_socket = "control.sock"

[receiver]
allowed_senders = ["2001:db8::/32"]

[[listeners]]
transport = "tcp"
address = "2001:db8::1"
port = {port}
{SSHD_JAIL}"""
    with netns("edge") as ns:
        for address in (
            "2001:db8::1",
            "2001:db8:0:2::25",
            *(f"2001:db8:0:1::{i:x}" for i in range(1, 21)),
        ):
            subprocess.run(
                ["ip", "-n", ns, "addr", "add", f"{address}/64", "dev", "lo", "nodad"],
                check=True,
                timeout=10,
            )
        d = Daemon(tmp_path, text, prefix=("ip", "netns", "exec", ns)).start()
        line = f"<38>Nov 22 10:00:01 mx1 sshd[42]: {FAILURE.format(address='203.0.113.63')}\n"
        clients = subprocess.Popen(
            ["ip", "netns", "exec", ns, sys.executable, "-c", PREFIX_CLIENTS, str(port), line],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert clients.stdout is not None and clients.stdout.readline() == "sent\n"
            wait_for("the mail server's ban", lambda: "203.0.113.63/32" in d.banned())
            stats = d.receiver()
            assert stats["refused_connections_sender"] == 600 - 32
            assert stats["refused_connections_total"] == 0
        finally:
            clients.communicate("", timeout=30)
            d.stop()
