"""What the CLI's tests share: a stand-in daemon on a control socket."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

STATUS: dict[str, Any] = {"jails": {}}


@pytest.fixture
def control_socket(tmp_path: Path) -> Iterator[Path]:
    """A stand-in daemon: answers one control request with STATUS; the request it read is
    in the file ``request.json`` beside the socket."""
    path = tmp_path / "control.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(1)
    server.settimeout(30)

    def answer() -> None:
        try:
            conn, _ = server.accept()
        except OSError:  # closed at teardown: the test never asked
            return
        with conn:
            (tmp_path / "request.json").write_bytes(conn.makefile("rb").readline())
            conn.sendall(json.dumps({"ok": True, "result": STATUS}).encode() + b"\n")

    thread = threading.Thread(target=answer, daemon=True)
    thread.start()
    yield path
    with contextlib.suppress(OSError):
        server.shutdown(socket.SHUT_RDWR)  # wakes an accept() still waiting
    thread.join(timeout=30)
    server.close()
