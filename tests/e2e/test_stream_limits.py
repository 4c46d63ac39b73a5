"""End to end: the decision stream's limits on the real daemon (``--dry-run``, loopback): a
request body is refused with 413 before it is read, and connections past the per-address cap
are closed at once while the ones held stay open and a bouncer's pull is answered."""

from __future__ import annotations

import json
import socket
import subprocess
import time
from pathlib import Path

from applianced.weblimits import MAX_PER_ADDRESS
from tests.e2e.daemon import BIN, LOOPBACK_UDP, SSHD_JAIL, Daemon, free_port

CONFIG = LOOPBACK_UDP + SSHD_JAIL + '\n[decisions]\naddress = "127.0.0.1"\nport = {stream}\n'


def until_closed(s: socket.socket, deadline: float = 15.0) -> bytes:
    """What the server sent before it closed ``s`` (fails past ``deadline`` seconds)."""
    s.settimeout(deadline)
    data, end = b"", time.monotonic() + deadline
    while time.monotonic() < end:
        chunk = s.recv(65536)
        if not chunk:
            return data
        data += chunk
    raise AssertionError(f"still open after {deadline} s; received {data[:200]!r}")


def test_a_body_and_a_flood_of_connections_are_refused(tmp_path: Path) -> None:
    stream = free_port()
    daemon = Daemon(tmp_path, CONFIG.format(port=free_port(), stream=stream)).start()
    try:
        ctl = [str(BIN / "appliancectl"), "bouncer", "add", "mx1", "--json"]
        added = subprocess.run(
            [*ctl, "--config", str(daemon.config)],
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        )
        key = json.loads(added.stdout)["api_key"]
        assert f"decision stream http://127.0.0.1:{stream}/, control socket" in daemon.output
        with socket.create_connection(("127.0.0.1", stream)) as s:
            s.sendall(b"GET /v1/decisions HTTP/1.1\r\nHost: a\r\nContent-Length: 314572800\r\n\r\n")
            s.sendall(b"A" * 65536)
            assert until_closed(s).startswith(b"HTTP/1.1 413 Content Too Large\r\n")

        held = [socket.create_connection(("127.0.0.1", stream)) for _ in range(MAX_PER_ADDRESS)]
        try:
            with socket.create_connection(("127.0.0.1", stream)) as extra:
                assert until_closed(extra) == b""
            pull = f"GET /v1/decisions/stream?startup=true HTTP/1.1\r\nHost: a\r\nX-Api-Key: {key}"
            held[0].sendall(pull.encode() + b"\r\nConnection: close\r\n\r\n")
            answer = until_closed(held[0])
            assert answer.startswith(b"HTTP/1.1 200 OK\r\n"), answer
            assert b'{"new":null,"deleted":null}' in answer
        finally:
            for s in held:
                s.close()
    finally:
        daemon.stop()


def test_a_busy_stream_port_is_named_as_the_streams(tmp_path: Path) -> None:
    """The start's error names what the busy port is for (it asked whether another syslog
    daemon held the decision stream's port)."""
    stream = free_port()
    (tmp_path / "appliance.toml").write_text(CONFIG.format(port=free_port(), stream=stream))
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", stream))
        busy.listen()
        done = subprocess.run(
            [str(BIN / "applianced"), "--config", str(tmp_path / "appliance.toml"), "--dry-run"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    assert done.returncode == 1
    assert (
        f"applianced: cannot listen on 127.0.0.1:{stream} (the decision stream, [decisions]): "
    ) in done.stderr
    assert "syslog daemon" not in done.stderr
