"""The bouncers' keys: ``bouncers.json`` in the state directory, a SHA-256 of each key by name.

``appliancectl bouncer add|remove|list`` (``cli/bouncers.py``) writes and reads it without the
daemon; the daemon's decision stream (``decisions/server.py``) reads it through ``KeyRing``,
which looks at the file's stamp on each request and re-reads it when it changed, so a key
added or removed counts from the next pull without a reload or a word to the daemon.

A file rather than the SQLite store: the CLI may not open the daemon's store (its layer never
imports the daemon's modules), and the file is as durable as the store beside it. A key is 32
random bytes, so a plain SHA-256 is enough to make the file useless to a reader (no password
to guess; a slow hash would only slow every pull). The file is written atomically, mode 0640,
owned like the state directory (``appliancectl`` runs as root, the daemon as ``applianced``).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import re
import secrets
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from applianced.conf.files import locked
from applianced.errors import ApplianceError

__all__ = ["KEYS_FILE", "BouncerError", "KeyRing", "add_bouncer", "key_hash", "read_keys",
           "remove_bouncer"]  # fmt: skip

KEYS_FILE = "bouncers.json"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,62}")


class BouncerError(ApplianceError):
    """A bouncer name or the keys file refused; the message says what to do."""


@dataclass(frozen=True, slots=True)
class Registered:
    """A bouncer as the file holds it."""

    name: str
    sha256: str
    added: str  # ISO 8601, UTC


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def read_keys(state_dir: Path) -> dict[str, Registered]:
    """The registered bouncers by name (none when the file is absent)."""
    path = state_dir / KEYS_FILE
    try:
        raw: Any = json.loads(path.read_text(encoding="utf-8"))
        return {
            name: Registered(name, entry["sha256"], entry["added"])
            for name, entry in raw["bouncers"].items()
        }
    except FileNotFoundError:
        return {}
    except OSError as e:
        raise BouncerError(f"cannot read {path}: {e.strerror}") from None
    except (ValueError, KeyError, TypeError, AttributeError):
        raise BouncerError(
            f"{path} is not a bouncer keys file; move it away and add the bouncers again "
            "(appliancectl bouncer add NAME)"
        ) from None


def add_bouncer(state_dir: Path, name: str) -> str:
    """Register ``name`` and return its new key (shown once: only its hash is kept)."""
    if not _NAME.fullmatch(name):
        raise BouncerError(
            f"{name!r} is not a bouncer name: 1 to 63 letters, digits, '.', '_', '@' or '-'"
        )
    with locked(state_dir):
        bouncers = read_keys(state_dir)
        if name in bouncers:
            raise BouncerError(
                f"bouncer {name!r} exists; `appliancectl bouncer remove {name}` first to "
                "give it a new key"
            )
        key = secrets.token_hex(32)
        now = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        bouncers[name] = Registered(name, key_hash(key), now)
        _write(state_dir, bouncers)
    return key


def remove_bouncer(state_dir: Path, name: str) -> None:
    with locked(state_dir):
        bouncers = read_keys(state_dir)
        if bouncers.pop(name, None) is None:
            known = ", ".join(sorted(bouncers)) or "none"
            raise BouncerError(f"no bouncer {name!r}; registered: {known}")
        _write(state_dir, bouncers)


def _write(state_dir: Path, bouncers: dict[str, Registered]) -> None:
    path = state_dir / KEYS_FILE
    text = json.dumps(
        {"bouncers": {b.name: {"sha256": b.sha256, "added": b.added} for b in bouncers.values()}},
        indent=2,
    )
    owner = state_dir.stat()
    fd, tmp = tempfile.mkstemp(dir=state_dir, prefix=f".{KEYS_FILE}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text + "\n")
            f.flush()
            os.fchmod(f.fileno(), 0o640)
            if os.geteuid() == 0:
                os.fchown(f.fileno(), owner.st_uid, owner.st_gid)
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        raise BouncerError(f"cannot write {path}: {e.strerror}") from None


class KeyRing:
    """The daemon's view of the keys file, re-read when its stamp changes."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self._stamp: tuple[int, int, int] | None = None
        self._by_hash: dict[str, str] = {}

    def names(self) -> list[str]:
        self._refresh()
        return sorted(self._by_hash.values())

    def lookup(self, key: str) -> str | None:
        """The name of the bouncer whose key is ``key``, or None."""
        self._refresh()
        return self._by_hash.get(key_hash(key)) if key else None

    def _refresh(self) -> None:
        try:
            st = (self.state_dir / KEYS_FILE).stat()
            stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        except FileNotFoundError:
            stamp = None
        if stamp != self._stamp:
            self._by_hash = {b.sha256: b.name for b in read_keys(self.state_dir).values()}
            self._stamp = stamp
