"""The control-socket client of ``appliancectl``: one JSON request, one answer (``control.py``
is the server), and the CLI's error with its exit code. Every verb module imports this one; it
imports nothing of the daemon, so the online verbs start fast.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

from applianced.errors import ApplianceError, ConfigError, ConfigErrors

__all__ = ["EXIT_DOWN", "EXIT_REFUSED", "EXIT_USAGE", "CliError", "request"]

EXIT_REFUSED, EXIT_USAGE, EXIT_DOWN = 1, 2, 3


# The code of a --json error, by exit code, unless the error names its own.
_KINDS = {EXIT_REFUSED: "refused", EXIT_USAGE: "usage", EXIT_DOWN: "daemon_unreachable"}


class CliError(ApplianceError):
    """What ``appliancectl`` prints on stderr before exiting with ``code``: 1 for a refused
    request, 2 for bad usage or config, 3 when the daemon is down. ``kind`` is the code a
    ``--json`` error carries (``config_invalid``, ``edit_refused``, else by exit code) and
    ``fields`` what it adds (a config error's file, line and key)."""

    def __init__(
        self,
        message: str,
        code: int = EXIT_REFUSED,
        kind: str | None = None,
        fields: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.kind = kind or _KINDS[code]
        self.fields = fields or {}

    @classmethod
    def config(cls, e: ConfigError, message: str | None = None) -> CliError:
        """A config file the loader refuses (exit 2), with each mistake's place for --json."""
        mistakes = e.errors if isinstance(e, ConfigErrors) else (e,)
        places = [
            {"file": str(m.path), "line": m.line, "key": m.key, "message": m.message}
            for m in mistakes
        ]
        fields = {"file": str(e.path), "line": e.line, "key": e.key, "errors": places}
        return cls(message or str(e), EXIT_USAGE, "config_invalid", fields)

    def as_json(self) -> dict[str, Any]:
        return {"error": {**self.fields, "code": self.kind, "message": str(self)}}


def request(
    sock_path: Path, verb: str, args: dict[str, Any] | None = None, timeout: float = 30.0
) -> Any:
    """Send one request to the daemon and return its result, or raise CliError."""
    line = json.dumps({"verb": verb, "args": args or {}}).encode() + b"\n"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(str(sock_path))
    except (FileNotFoundError, ConnectionRefusedError):
        raise CliError(
            f"applianced is not running (nothing answers on {sock_path}); start it with "
            "`systemctl start applianced` or `./dev run`, or pass --socket/--config",
            EXIT_DOWN,
        ) from None
    except PermissionError:
        raise CliError(
            f"no permission to use {sock_path}; run as root or as a member of the applianced group",
            EXIT_DOWN,
        ) from None
    try:
        s.sendall(line)
        data = b""
        while not data.endswith(b"\n"):
            chunk = s.recv(1 << 16)
            if not chunk:
                break
            data += chunk
    except OSError as e:
        raise CliError(f"lost the connection to applianced: {e}", EXIT_DOWN) from None
    finally:
        s.close()
    try:
        answer = json.loads(data)
    except ValueError:
        raise CliError("applianced sent an unreadable answer; see its log", EXIT_DOWN) from None
    if not answer.get("ok"):
        raise CliError(str(answer.get("error", "request refused")))
    return answer.get("result")
