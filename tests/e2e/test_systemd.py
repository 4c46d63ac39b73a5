"""End to end: what systemd sees of applianced, without systemd as PID 1.

The unit is checked offline with ``systemd-analyze`` (verify, security); the real daemon talks
sd_notify to a datagram socket the test owns, in place of systemd's; the unit's privilege model
(an unprivileged user with ambient CAP_NET_ADMIN and CAP_NET_BIND_SERVICE) is reproduced with
``setpriv`` in a network namespace. ``./dev install`` is staged into a DESTDIR that is then
renamed, and the staged files are mounted where they belong in a mount namespace of their own
(``as_installed``): the unit is verified and the daemon run there, as once copied to ``/``.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.daemon import BIN, LOOPBACK_UDP, Daemon, free_port, wait_for
from tests.netns import netns, netns_missing, ns_exec

REPO = Path(__file__).resolve().parents[2]
UNIT = REPO / "systemd" / "applianced.service"
INSTALLED = Path("/opt/applianced/venv/bin")
STAGED_UNIT = "usr/local/lib/systemd/system/applianced.service"
NOBODY = 65534

needs_analyze = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="needs systemd-analyze (Debian's systemd)"
)

# sh -c: the staged /opt/applianced ($1) and /usr/local/bin ($2) mounted where they belong.
_MOUNT_STAGED = (
    'mount --bind "$1" /opt/applianced; mount --bind "$2" /usr/local/bin; shift 2; exec "$@"'
)


def as_installed(root: Path) -> tuple[str, ...]:
    """A command prefix: run in a mount namespace of its own in which ``root``'s
    /opt/applianced and /usr/local/bin are at those paths, as if the staged tree had been
    copied to /. Nothing outside the namespace sees the mounts."""
    opt, links = root / "opt/applianced", root / "usr/local/bin"
    return ("unshare", "--mount", "sh", "-ec", _MOUNT_STAGED, "as_installed", str(opt), str(links))


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=60)


def dev_install(dest: Path) -> str:
    """`DESTDIR=dest ./dev install`; its messages."""
    done = subprocess.run(
        [str(REPO / "dev"), "install"],
        env={**os.environ, "DESTDIR": str(dest)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    return done.stderr


@pytest.fixture(scope="module")
def staged() -> Iterator[Path]:
    """`DESTDIR=STAGE ./dev install`, then STAGE renamed, as a package's files leave the
    staging directory: a file that still named it would break. Not under pytest's base
    directory (0700 root): the unprivileged user's daemon runs from here."""
    base = Path(tempfile.mkdtemp(prefix="applianced-staged-"))
    try:
        base.chmod(0o755)
        dev_install(base / "stage")
        yield (base / "stage").rename(base / "root")
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_staged_install_works_once_copied_to_root(staged: Path) -> None:
    """At their final paths, the staged links and venv run: `applianced --version`, and
    `appliancectl check` accepts the installed config (the shipped filters are found); no
    staged file names the staging directory."""
    version = run(*as_installed(staged), "/usr/local/bin/applianced", "--version")
    assert version.returncode == 0, version.stderr
    assert version.stdout.startswith("applianced ")
    config = str(staged / "etc/applianced/appliance.toml")
    check = run(*as_installed(staged), "/usr/local/bin/appliancectl", "check", "--config", config)
    assert check.returncode == 0, check.stdout + check.stderr
    stage = str(staged.parent / "stage")
    naming = run("grep", "-rlF", stage, str(staged))
    assert naming.returncode == 1, f"files naming {stage}:\n{naming.stdout}{naming.stderr}"


@needs_analyze
def test_unit_passes_systemd_analyze_verify(staged: Path) -> None:
    """`systemd-analyze verify` accepts the installed unit with no warning (it checks that
    ExecStart= and ExecReload= are executables: the staged ones, at their final paths)."""
    done = run(*as_installed(staged), "systemd-analyze", "verify", str(staged / STAGED_UNIT))
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip() == "", done.stderr


@needs_analyze
def test_unit_security_exposure_is_ok(staged: Path) -> None:
    """`systemd-analyze security --offline` rates the unit's exposure at most 2.0 ("OK")."""
    done = run(
        *as_installed(staged),
        *("systemd-analyze", "security", "--offline=yes", "--no-pager"),
        str(staged / STAGED_UNIT),
    )
    match = re.search(r"Overall exposure level for applianced\.service: ([0-9.]+)", done.stdout)
    assert match is not None, done.stdout + done.stderr
    assert float(match.group(1)) <= 2.0, done.stdout


def test_unit_limits_capabilities_to_the_two_needed() -> None:
    """Ambient and bounding capability sets are exactly CAP_NET_ADMIN and CAP_NET_BIND_SERVICE."""
    settings = dict(
        line.split("=", 1)
        for line in UNIT.read_text().splitlines()
        if "=" in line and line[0] != "#"
    )
    assert settings["AmbientCapabilities"] == "CAP_NET_ADMIN CAP_NET_BIND_SERVICE"
    assert settings["CapabilityBoundingSet"] == "CAP_NET_ADMIN CAP_NET_BIND_SERVICE"
    assert settings["User"] == "applianced"
    assert settings["Type"] == "notify"


class NotifySocket:
    """systemd's side of sd_notify: a datagram socket whose messages the test reads in order."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.seen: list[dict[str, str]] = []

    def next(self, key: str, timeout: float = 15.0) -> dict[str, str]:
        """The next message carrying ``key``; the ones before it stay in ``seen``."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {key} within {timeout}s; saw {self.seen}")
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            msg = dict(line.split("=", 1) for line in data.decode().split("\n"))
            self.seen.append(msg)
            if key in msg:
                return msg

    def close(self) -> None:
        self.sock.close()


CONFIG = (
    LOOPBACK_UDP
    + """
[jails.sshd]
filter = "sshd"
ports = [22]
"""
)


class NotifiedDaemon(Daemon):
    """The daemon started as systemd would: $NOTIFY_SOCKET and $WATCHDOG_USEC set; start()
    returns at once, without waiting for the control socket (READY=1 is what says so)."""

    def __init__(self, workdir: Path, config_text: str, env: dict[str, str]) -> None:
        super().__init__(workdir, config_text, args=("--dry-run", "--log-format", "journal"))
        self.env = env

    def start(self) -> NotifiedDaemon:
        with self.log.open("ab") as logf:
            self.proc = subprocess.Popen(
                [str(BIN / "applianced"), "--config", str(self.config), *self.args],
                stdout=logf,
                stderr=subprocess.STDOUT,
                env={**os.environ, **self.env},
            )
        return self


@pytest.fixture
def notify(tmp_path: Path) -> Iterator[NotifySocket]:
    s = NotifySocket(tmp_path / "notify.sock")
    yield s
    s.close()


def test_daemon_speaks_sd_notify(tmp_path: Path, notify: NotifySocket) -> None:
    """READY=1 once the store's bans are restored and the control socket answers; WATCHDOG=1
    every WATCHDOG_USEC/2; RELOADING=1 and READY=1 around SIGHUP (also a refused one);
    STOPPING=1 at SIGTERM; journal-format lines on stderr."""
    config = CONFIG.format(port=free_port())
    first = Daemon(tmp_path, config).start()  # leave one active ban in the store
    try:
        first.ctl("ban", "sshd", "198.51.100.7")
    finally:
        first.stop()

    env = {"NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": "400000"}
    d = NotifiedDaemon(tmp_path, config, env).start()
    try:
        ready = notify.next("READY")
        # Nothing was waited for but READY=1: the restored ban and the control socket are there.
        banned = d.ctl("banned")
        assert [b["address"] for b in banned] == ["198.51.100.7/32"]
        assert ready["STATUS"] == "1 jail, 1 active ban, 0 messages received"
        assert "<6>[applianced.appliance] restored 1 active ban into" in d.output
        assert notify.seen == [ready]

        notify.next("WATCHDOG")
        start = time.monotonic()
        notify.next("WATCHDOG")
        notify.next("WATCHDOG")
        assert time.monotonic() - start < 2.0  # every 0.2 s, not every 30 s

        assert d.proc is not None
        d.proc.send_signal(signal.SIGHUP)
        reloading = notify.next("RELOADING")
        assert int(reloading["MONOTONIC_USEC"]) > 0
        assert notify.next("READY")["STATUS"].startswith("1 jail, 1 active ban,")
        wait_for("the reload's log line", lambda: "<6>[applianced.service] reloaded" in d.output)

        d.config.write_text(config + "\n[jails.sshd.nonsense]\n")
        d.proc.send_signal(signal.SIGHUP)
        notify.next("RELOADING")
        assert notify.next("READY")["STATUS"].startswith("reload refused:")
        wait_for(
            "the refusal's log line", lambda: "<3>[applianced.service] reload refused" in d.output
        )

        d.proc.send_signal(signal.SIGTERM)
        assert notify.next("STOPPING")["STOPPING"] == "1"
        assert d.proc.wait(timeout=30) == 0
    finally:
        d.stop()


@pytest.mark.skipif(netns_missing() is not None, reason=str(netns_missing()))
@pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs setpriv (util-linux)")
def test_unprivileged_user_with_the_units_capabilities_bans_in_the_kernel(staged: Path) -> None:
    """As the unit runs it (a non-root user, ambient CAP_NET_ADMIN + CAP_NET_BIND_SERVICE only,
    no new privileges), from the staged install (which that user can read wherever the suite
    runs, unlike this venv under a 0700 directory): binds port 514, writes its SQLite store and
    bans through nftables."""
    caps = "-all,+net_admin,+net_bind_service"
    # Not under tmp_path: pytest's base directory is 0700 root, and the daemon is not root.
    workdir = Path(tempfile.mkdtemp(prefix="applianced-unpriv-"))
    try:
        workdir.chmod(0o755)
        with netns("unpriv") as ns:
            d = Daemon(
                workdir,
                CONFIG.format(port=514),
                args=(),
                prefix=(
                    *("ip", "netns", "exec", ns, *as_installed(staged), "setpriv"),
                    *(f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"),
                    *(f"--inh-caps={caps}", f"--ambient-caps={caps}", f"--bounding-set={caps}"),
                    "--no-new-privs",
                ),
                bindir=INSTALLED,
            )
            os.chown(d.config, NOBODY, NOBODY)
            os.chown(workdir, NOBODY, NOBODY)
            d.start()
            try:
                d.ctl("ban", "sshd", "198.51.100.9")
                listing = ns_exec(ns, "nft", "-j", "list", "set", "inet", "applianced", "sshd_v4")
                assert "198.51.100.9" in listing.stdout
                store = workdir / "state" / "offenders.sqlite"
                assert store.stat().st_uid == NOBODY
            finally:
                d.stop()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def test_the_staged_config_is_readable_by_the_service_user_once_set_up(
    staged: Path, tmp_path: Path
) -> None:
    """Copied to a root where systemd-sysusers and systemd-tmpfiles --create then run (as a
    package's postinst, or the next boot), /etc/applianced/appliance.toml is root:applianced
    0640: the unit's User=applianced reads it. Staged, it is root:root 0640 (the group does
    not exist yet), which the daemon could not read."""
    root = tmp_path / "root"
    shutil.copytree(staged, root, symlinks=True)
    lib = root / "usr/local/lib"
    run("systemd-sysusers", f"--root={root}", str(lib / "sysusers.d/applianced.conf"))
    run("systemd-tmpfiles", f"--root={root}", "--create", str(lib / "tmpfiles.d/applianced.conf"))
    group = next(
        line.split(":") for line in (root / "etc/group").read_text().splitlines()
        if line.startswith("applianced:")
    )  # fmt: skip
    conf = (root / "etc/applianced/appliance.toml").stat()
    assert (conf.st_uid, conf.st_gid, conf.st_mode & 0o777) == (0, int(group[2]), 0o640)


def test_dev_install_stages_everything_and_keeps_an_existing_config(staged: Path) -> None:
    """`./dev install` with DESTDIR: venv, links, unit, sysusers, tmpfiles and the default
    config land where expected, the venv with runtime dependencies only; a second install
    leaves an edited config alone."""
    venv = staged / "opt/applianced/venv"
    for name in ("applianced", "appliancectl"):
        link = staged / "usr/local/bin" / name
        assert os.readlink(link) == str(INSTALLED / name)
        assert (venv / "bin" / name).is_file()
    lib = staged / "usr/local/lib"
    assert (lib / "systemd/system/applianced.service").read_text() == UNIT.read_text()
    sysusers = (lib / "sysusers.d/applianced.conf").read_text()
    assert re.search(r"^u applianced ", sysusers, re.M)
    assert "d /var/lib/applianced" in (lib / "tmpfiles.d/applianced.conf").read_text()
    conf = staged / "etc/applianced/appliance.toml"
    assert conf.read_text() == (REPO / "examples/appliance.production.toml").read_text()
    assert conf.stat().st_mode & 0o777 == 0o640
    freeze = run(*as_installed(staged), str(INSTALLED / "pip"), "freeze", "--local")
    assert "twisted" in freeze.stdout.lower(), freeze.stderr
    assert "pytest" not in freeze.stdout.lower()  # runtime dependencies only

    text = conf.read_text()
    try:
        conf.write_text("# mine\n")
        assert "keeping the existing" in dev_install(staged)
        assert conf.read_text() == "# mine\n"
    finally:
        conf.write_text(text)
