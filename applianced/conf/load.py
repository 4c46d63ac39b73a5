"""TOML -> Config. Every error names the file, the line (when it can be found) and the key.

Unknown keys are errors (a typo must not silently disable a jail). Durations accept seconds or
``10m``/``1h``/``1d``/``1w``. A jail's ``filter`` names a shipped filter, a fail2ban ``.conf``
file, or a filter in ``filter_dir``, whose failregex, ignoreregex and programs the jail takes
unless it sets its own; every regex is compiled here so
that ``appliancectl check`` catches a bad one before the daemon does.

The tables are read by ``listenerconf.py`` (``[receiver]``, ``[[listeners]]``),
``jailconf.py`` (``[defaults]``, ``[jails.*]``) and ``tables.py`` (``[metrics]``, ``[state]``,
``[notify]``) through a ``tomlread.TomlReader``; this module reads the file and puts the
Config together.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, get_args

from applianced.conf.jailconf import read_jail, read_policy
from applianced.conf.listenerconf import read_listeners
from applianced.conf.paths import (
    DEFAULT_CONFIG,
    DEFAULT_CONTROL_SOCKET,
    DEFAULT_STATE_DIR,
    read_config,
)
from applianced.conf.schema import Config, EnforcementConf, LogLevelName
from applianced.conf.tables import read_decisions, read_metrics, read_notify, read_state
from applianced.conf.tomlread import Mistakes, TomlReader, duration_or_zero, get
from applianced.errors import ConfigError

__all__ = ["DEFAULT_CONFIG", "load_config", "parse_config"]

_TOP = {
    "daemon",
    "decisions",
    "receiver",
    "listeners",
    "enforcement",
    "defaults",
    "jails",
    "notify",
    "metrics",
    "state",
}
_DAEMON = {"state_dir", "control_socket", "lines_per_ban", "log_level"}
_ENFORCEMENT = {"priority", "on_stop", "reconcile_interval"}


def load_config(path: Path | str) -> Config:
    """Read and validate the configuration file at ``path``."""
    path = Path(path)
    return parse_config(read_config(path), path)


def parse_config(text: str, path: Path) -> Config:
    """Validate TOML ``text`` (read from ``path``, used for messages and relative paths)."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        found = re.search(r"at line (\d+)", str(e))
        line = int(found[1]) if found else None
        raise ConfigError(path, "", f"not valid TOML: {e}", line) from None
    return _config(TomlReader(path, text), raw)


def _config(r: TomlReader, raw: Mapping[str, Any]) -> Config:
    """Each table read on its own, so that one mistake does not hide the next: every error
    is raised together at the end (``Mistakes``)."""
    found = Mistakes()
    for key in raw:
        if key not in _TOP:
            found.add(
                r.error((key,), f"unknown section {key!r}; allowed: {', '.join(sorted(_TOP))}")
            )
    with found.collect():
        daemon = _daemon(r, raw)
    with found.collect():
        listeners = read_listeners(r, raw)
    with found.collect():
        enforcement = _enforcement(r, raw)
    with found.collect():
        notify = read_notify(r, raw)
    with found.collect():
        metrics = read_metrics(r, raw)
    with found.collect():
        state = read_state(r, raw)
    with found.collect():
        decisions = read_decisions(r, raw)
    jails = []
    with found.collect():
        policy = read_policy(r, raw)
        jails_raw = r.table(raw, ("jails",), set(get(raw, ("jails",)) or ()))
        for name in jails_raw:
            with found.collect():
                jails.append(read_jail(r, raw, name, policy))
    found.raise_any()
    for j in jails:
        if j.notify and j.enabled and not notify.to:
            raise r.error(
                ("notify", "to"),
                f"jail {j.name} has notify = {list(j.notify)} but [notify] sets no 'to' "
                '(e.g. to = ["postmaster@example.org"])',
            )
    return Config(
        **daemon,
        path=r.path,
        listeners=listeners,
        jails=tuple(jails),
        enforcement=enforcement,
        notify=notify,
        metrics=metrics,
        state=state,
        decisions=decisions,
    )


def _daemon(r: TomlReader, raw: Mapping[str, Any]) -> dict[str, Any]:
    """[daemon], as the Config's fields: the state directory, the control socket, the lines
    kept per ban, the log level."""
    daemon = r.table(raw, ("daemon",), _DAEMON)
    return {
        "state_dir": r.path_of(daemon.get("state_dir", DEFAULT_STATE_DIR), ("daemon", "state_dir")),
        "control_socket": r.path_of(
            daemon.get("control_socket", DEFAULT_CONTROL_SOCKET), ("daemon", "control_socket")
        ),
        "lines_per_ban": r.int_in(
            daemon.get("lines_per_ban", 20), ("daemon", "lines_per_ban"), 0, 1000
        ),
        "log_level": r.choice(
            daemon.get("log_level", "info"), ("daemon", "log_level"), get_args(LogLevelName)
        ),
    }


def _enforcement(r: TomlReader, raw: Mapping[str, Any]) -> EnforcementConf:
    enforcement = r.table(raw, ("enforcement",), _ENFORCEMENT)
    return EnforcementConf(
        priority=r.int_in(enforcement.get("priority", -10), ("enforcement", "priority"), -400, 400),
        on_stop=r.choice(
            enforcement.get("on_stop", "keep"), ("enforcement", "on_stop"), ("keep", "flush")
        ),
        reconcile_interval=r.convert(
            enforcement.get("reconcile_interval", 60),
            ("enforcement", "reconcile_interval"),
            duration_or_zero,
        ),
    )
