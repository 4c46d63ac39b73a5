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
def answer() -> dict[str, Any]:
    """What the stand-in daemon answers: STATUS, unless the test sets ``answer["result"]``."""
    return {"ok": True, "result": STATUS}


@pytest.fixture
def control_socket(tmp_path: Path, answer: dict[str, Any]) -> Iterator[Path]:
    """A stand-in daemon: answers one control request with ``answer``; the request it read
    is in the file ``request.json`` beside the socket."""
    yield from _serve(tmp_path, answer)


@pytest.fixture
def refusing_socket(tmp_path: Path) -> Iterator[Path]:
    """A stand-in daemon that refuses the one request it reads."""
    yield from _serve(tmp_path, {"ok": False, "error": "no jail 'nojail'"})


def _serve(tmp_path: Path, answer: dict[str, Any]) -> Iterator[Path]:
    path = tmp_path / "control.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(1)
    server.settimeout(30)

    def reply() -> None:
        try:
            conn, _ = server.accept()
        except OSError:  # closed at teardown: the test never asked
            return
        with conn:
            (tmp_path / "request.json").write_bytes(conn.makefile("rb").readline())
            conn.sendall(json.dumps(answer).encode() + b"\n")

    thread = threading.Thread(target=reply, daemon=True)
    thread.start()
    yield path
    with contextlib.suppress(OSError):
        server.shutdown(socket.SHUT_RDWR)  # wakes an accept() still waiting
    thread.join(timeout=30)
    server.close()
