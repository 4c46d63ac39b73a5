"""End to end: a mistake in the config file on disk does not lock the operator out of the
running daemon. `appliancectl --config FILE` finds the control socket by reading just its path,
so status, unban and reload still reach the daemon; reload reports the file's errors and the
daemon keeps the config it runs; check lists every error with its file and line."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.daemon import BIN, LOOPBACK_UDP, SSHD_JAIL, Daemon, free_port

CONFIG = (
    LOOPBACK_UDP
    + SSHD_JAIL
    + """
[jails.dovecot]
filter = "dovecot"
"""
)


def ctl(d: Daemon, *args: str) -> tuple[int, str, str]:
    """appliancectl with --config only: it must find the socket through the file."""
    done = subprocess.run(
        [str(BIN / "appliancectl"), "--config", str(d.config), *args],
        capture_output=True,
        text=True,
        timeout=30,
    )
    return done.returncode, done.stdout, done.stderr


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    d = Daemon(tmp_path, CONFIG.format(port=free_port()))
    try:
        yield d.start()
    finally:
        d.stop()


def line_of(path: Path, text: str) -> int:
    return path.read_text().splitlines().index(text) + 1


def test_status_unban_and_reload_reach_the_daemon_through_a_broken_config(
    daemon: Daemon,
) -> None:
    daemon.ctl("ban", "sshd", "203.0.113.7")
    broken = daemon.config.read_text().replace("maxretry = 3", 'maxretry = "3"')
    broken = broken.replace('filter = "dovecot"', 'filter = "dovecot"\nbantime = -1')
    daemon.config.write_text(broken)
    maxretry_line = line_of(daemon.config, 'maxretry = "3"')
    bantime_line = line_of(daemon.config, "bantime = -1")

    rc, out, err = ctl(daemon, "status", "--json")
    assert rc == 0, err
    assert set(json.loads(out)["jails"]) == {"sshd", "dovecot"}

    rc, out, err = ctl(daemon, "unban", "203.0.113.7")
    assert rc == 0, err
    assert "unbanned 203.0.113.7/32 in sshd" in out

    rc, out, err = ctl(daemon, "reload")
    assert rc == 1
    assert f"{daemon.config}:{maxretry_line}:" in err and "whole number" in err
    assert daemon.ctl("status")["jails"]["sshd"]["maxretry"] == 3  # the running config stays

    rc, out, err = ctl(daemon, "check")
    assert rc == 2
    assert f"{daemon.config}:{maxretry_line}: [defaults.maxretry]" in err
    assert f"{daemon.config}:{bantime_line}: [jails.dovecot.bantime]" in err

    rc, out, err = ctl(daemon, "check", "--json")
    assert rc == 2 and out == ""
    lines = [(m["line"], m["key"]) for m in json.loads(err)["error"]["errors"]]
    assert lines == [(maxretry_line, "defaults.maxretry"), (bantime_line, "jails.dovecot.bantime")]
    rc, out, err = ctl(daemon, "reload", "--json")
    assert rc == 1 and json.loads(err)["error"]["code"] == "refused"
