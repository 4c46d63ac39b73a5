"""Where things are, known without the config loader: the config file the daemon and
``appliancectl`` read (``config_path``), and the control socket a config file names
(``control_socket``), the file's text (``read_config``, for the loader and the edit verbs too)
and its TOML read alone (``read_toml``, also for ``jailvalues.py``).
The loader (``conf/load.py``) uses the same defaults; ``appliancectl``'s online verbs call
``control_socket`` so that they load neither the filters nor the rest.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

from applianced.errors import ConfigError

__all__ = ["DEFAULT_CONFIG", "DEFAULT_CONTROL_SOCKET", "config_path", "control_socket"]

DEFAULT_CONFIG = Path(__file__).parent / "defaults" / "appliance.toml"
DEFAULT_CONTROL_SOCKET = "/run/applianced/control.sock"
DEFAULT_STATE_DIR = "/var/lib/applianced"


def config_path(given: Path | None) -> Path:
    """The config file: ``given`` (--config), else $APPLIANCED_CONFIG, else
    /etc/applianced/appliance.toml when it exists, else the shipped one."""
    if given is not None:
        return given
    env = os.environ.get("APPLIANCED_CONFIG")
    if env:
        return Path(env)
    etc = Path("/etc/applianced/appliance.toml")
    return etc if etc.exists() else DEFAULT_CONFIG


def control_socket(path: Path) -> Path:
    """``[daemon] control_socket`` of the config file at ``path`` (relative to its directory),
    read alone: a daemon running an older config still answers when the file has since been
    edited into one the loader refuses (``appliancectl check`` says why)."""
    return _daemon_path(path, "control_socket", DEFAULT_CONTROL_SOCKET)


def state_dir(path: Path) -> Path:
    """``[daemon] state_dir`` of the config file at ``path``, read alone as ``control_socket``
    is: the bouncers' keys stay manageable while the file has mistakes."""
    return _daemon_path(path, "state_dir", DEFAULT_STATE_DIR)


def _daemon_path(path: Path, key: str, default: str) -> Path:
    raw = read_toml(path)
    daemon = raw.get("daemon", {})
    if not isinstance(daemon, dict):
        raise ConfigError(path, "daemon", "must be a table ([daemon])")
    value = daemon.get(key, default)
    if not isinstance(value, str):
        raise ConfigError(path, f"daemon.{key}", f"must be a path, not {value!r}")
    found = Path(value)
    return found if found.is_absolute() else (path.parent / found).resolve()


def read_toml(path: Path) -> dict[str, Any]:
    """The config file at ``path`` as TOML, for the readers that skip the loader (the control
    socket's path, ``jail get``); ConfigError for a file missing, unreadable or not TOML."""
    try:
        return tomllib.loads(read_config(path))
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(path, "", f"not valid TOML: {e}") from None


def read_config(path: Path, shown: Path | None = None) -> str:
    """The text of the config file at ``path`` (named ``shown`` in messages, ``path`` by
    default), for the loader, the edit verbs and ``read_toml``: ConfigError for a file missing,
    unreadable, not UTF-8, or starting with a byte order mark (tomllib's word for that is
    "Empty key at line 1")."""
    shown = path if shown is None else shown
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise ConfigError(shown, "", "file not found; pass --config PATH") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(shown, "", f"cannot read the file: {e}") from None
    if text.startswith("\ufeff"):
        raise ConfigError(
            shown,
            "",
            "the file starts with a byte order mark (some Windows editors write one); save it "
            "as UTF-8 without one",
            1,
        )
    return text
