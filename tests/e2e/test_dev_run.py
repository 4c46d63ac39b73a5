"""End to end: the developer's daemon. ``./dev run`` runs on ``.run/appliance.toml``, a copy of
the shipped config made at the first run and kept, with its state and control socket in
``.run/`` too; ``./dev ctl`` is ``appliancectl`` on that copy, so edits never touch a tracked
file. And an edit verb's check that it changed the file the running daemon reads compares the
files, not how their paths were written.

``./dev`` runs from a scratch tree (a copy of the script, the package linked, this venv's
``bin`` linked under a fresh ``.installed`` stamp so that its set-up has nothing to do) inside
a network namespace, where the shipped config's 127.0.0.1:5514 is free.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.e2e.daemon import BIN, LOOPBACK_UDP, SSHD_JAIL, Daemon, free_port, wait_for
from tests.netns import netns, netns_missing

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "applianced" / "conf" / "defaults" / "appliance.toml"
WARNING = "the running daemon reads"
# The sshd jail not last: an edit of the last table is issue 19's other bug, not this one's.
CONFIG = LOOPBACK_UDP + SSHD_JAIL + '\n[jails.dovecot]\nfilter = "dovecot"\n'


class RelativeDaemon(Daemon):
    """The daemon started in its work directory with ``--config appliance.toml``."""

    def start(self) -> RelativeDaemon:
        with self.log.open("ab") as logf:
            self.proc = subprocess.Popen(
                [str(BIN / "applianced"), "--config", self.config.name, *self.args],
                stdout=logf,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
            )
        wait_for("applianced to answer on its control socket", self._answers)
        return self


def edit(config: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    """`appliancectl jail set sshd maxretry 2 --config CONFIG`, run in ``cwd``."""
    argv = [str(BIN / "appliancectl"), "jail", "set", "sshd", "maxretry", "2"]
    return subprocess.run(
        [*argv, "--config", str(config)], capture_output=True, text=True, timeout=30, cwd=cwd
    )


def test_edit_of_the_daemons_file_written_otherwise_does_not_warn(tmp_path: Path) -> None:
    """The daemon reads `appliance.toml` relative to its directory; an edit of the same file by
    its absolute path, from another directory, reloads it without the warning that the daemon
    reads another file. An edit of another file still warns."""
    d = RelativeDaemon(tmp_path, CONFIG.format(port=free_port())).start()
    try:
        done = edit(d.config, cwd=Path("/"))
        assert done.returncode == 0, done.stderr
        assert "reloaded" in done.stdout and WARNING not in done.stdout, done.stdout

        other = tmp_path / "other.toml"  # the same control socket: control.sock beside it
        shutil.copy(d.config, other)
        other.write_text(other.read_text().replace("maxretry = 2", "maxretry = 3"))
        done = edit(other, cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        assert f"{WARNING} {d.config}, not {other}" in done.stdout, done.stdout
    finally:
        d.stop()


@pytest.fixture
def scratch(tmp_path: Path) -> Path:
    """A tree ``./dev`` runs from as from a clone: the script copied, the package and the files
    its set-up compares linked, and a ``.venv`` whose ``bin`` is this venv's, stamped now, so
    that the set-up finds nothing to rebuild (it must never rebuild this venv from here)."""
    root = tmp_path / "clone"
    root.mkdir()
    shutil.copy2(REPO / "dev", root / "dev")
    for name in ("applianced", "requirements.txt", "pyproject.toml"):
        (root / name).symlink_to(REPO / name)
    (root / ".venv").mkdir()
    (root / ".venv" / "bin").symlink_to(BIN)
    (root / ".venv" / ".installed").touch()
    return root


@contextmanager
def dev_run(root: Path, ns: str) -> Iterator[subprocess.Popen[bytes]]:
    """`./dev run --dry-run` inside ``ns``, answering on its control socket; stopped on exit."""
    with (root / "dev-run.log").open("ab") as log:
        proc = subprocess.Popen(
            ["ip", "netns", "exec", ns, str(root / "dev"), "run", "--dry-run"],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for("./dev run to answer", lambda: answers(root, proc), timeout=30)
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        proc.wait(30)


def answers(root: Path, proc: subprocess.Popen[bytes]) -> bool:
    if proc.poll() is not None:
        raise AssertionError(f"./dev run exited: {(root / 'dev-run.log').read_text()}")
    return ctl(root, "status").returncode == 0


def ctl(root: Path, *args: str, cwd: Path = Path("/")) -> subprocess.CompletedProcess[str]:
    """`./dev ctl ARGS` from ``cwd``."""
    return subprocess.run(
        [str(root / "dev"), "ctl", *args], capture_output=True, text=True, timeout=30, cwd=cwd
    )


@pytest.mark.skipif(netns_missing() is not None, reason=str(netns_missing()))
def test_dev_run_keeps_its_own_config_copy_and_dev_ctl_edits_it(scratch: Path) -> None:
    """`./dev run` makes .run/appliance.toml from the shipped config (state and socket in
    .run/); `./dev ctl jail set` edits and reloads that copy, not the tracked file, without a
    warning; the ban that follows is in .run/'s store; a second run keeps the edited copy."""
    shipped = SHIPPED.read_bytes()
    run = scratch / ".run"
    with netns("devrun") as ns:
        with dev_run(scratch, ns):
            assert (run / "control.sock").is_socket()
            done = ctl(scratch, "jail", "set", "sshd", "maxretry", "2")
            assert done.returncode == 0, done.stderr
            assert f"{run / 'appliance.toml'}: jails.sshd.maxretry: 3 -> 2" in done.stdout
            assert "reloaded" in done.stdout and WARNING not in done.stdout, done.stdout
            for _ in range(2):
                subprocess.run(
                    ["ip", "netns", "exec", ns, "logger", "--server", "127.0.0.1", "--port",
                     "5514", "--udp", "--tag", "sshd",
                     "Failed password for root from 203.0.113.7 port 4242 ssh2"],
                    check=True, timeout=10,
                )  # fmt: skip
            wait_for("the ban", lambda: "203.0.113.7/32" in ctl(scratch, "banned").stdout)
        assert SHIPPED.read_bytes() == shipped
        assert (run / "state" / "offenders.sqlite").is_file()
        with dev_run(scratch, ns):
            assert "203.0.113.7/32" in ctl(scratch, "banned").stdout
            done = ctl(scratch, "jail", "set", "sshd", "maxretry", "2")
            assert "already so" in done.stdout, done.stdout + done.stderr
