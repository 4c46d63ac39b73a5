"""End to end: the installed ``appliancectl`` run as the users' Kerio notes run fail2ban-regex,
on a log file and on a pipe, as a separate process (its exit status, stdout and stderr)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from tests.e2e.daemon import BIN

MAILLOG = (
    "Nov 22 10:00:01 mx kerio[12]: 192.0.2.10 rejected: directory harvest attack\n"
    "Nov 22 10:00:02 mx kerio[12]: SMTP: User bob@example.org logged in\n"
    "Nov 22 10:00:03 mx kerio[12]: 192.0.2.11 rejected: directory harvest attack\n"
)


def appliancectl(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "appliancectl"), "--config", "/nonexistent/appliance.toml", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_kerio_notes_command_on_a_file_and_on_a_pipe(tmp_path: Path) -> None:
    log = tmp_path / "maillog"
    log.write_text(MAILLOG)
    done = appliancectl("test-filter", str(log), "<HOST> rejected: directory harvest attack")
    assert done.returncode == 0, done.stderr
    assert "Lines: 3 lines, 0 ignored, 2 matched, 1 missed" in done.stdout
    assert "|  2: Nov 22 10:00:02 mx kerio[12]: SMTP: User bob@example.org logged in" in done.stdout
    assert "matched 2" in done.stderr
    done = appliancectl(
        "test-filter", "-", "^<HOST> rejected: directory harvest attack", "--json", stdin=MAILLOG
    )
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout.splitlines()[-1])["summary"]
    assert summary["matched"] == 0 and summary["hint"].startswith("line 1: the failregex")
    assert "hint: line 1: the failregex does not allow the syslog prefix" in done.stderr


def test_no_log_among_the_arguments_exits_2(tmp_path: Path) -> None:
    done = appliancectl("test-filter", str(tmp_path / "maillog"), "<HOST> rejected")
    assert done.returncode == 2
    assert "no log to read" in done.stderr
