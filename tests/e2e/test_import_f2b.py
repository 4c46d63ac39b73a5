"""End to end: `appliancectl import-fail2ban` on Debian's stock fail2ban tree with a jail.local,
the real daemon started on what it wrote (its listener and state moved into the test's
namespace and directory), and a forwarded sshd line sent with the real logger bans the
attacker in the kernel: port 22 closed to it, port 25 still open."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.debian_fail2ban import FetchError, debian_filter_d
from tests.e2e.daemon import BIN, LOOPBACK_UDP, Daemon, logger, wait_for
from tests.netns import Topology, netns_missing, tcp_connects, tcp_listener, topology

pytestmark = [
    pytest.mark.skipif(netns_missing() is not None, reason=str(netns_missing())),
    pytest.mark.skipif(shutil.which("logger") is None, reason="util-linux logger missing"),
]

PORT = 5514
JAIL_LOCAL = """\
[DEFAULT]
maxretry = 3
bantime = 1h
destemail = postmaster@example.org

[postfix]
enabled = true
action = %(action_mwl)s

[dovecot]
enabled = true
"""


@pytest.fixture
def net() -> Iterator[Topology]:
    with topology("imp") as t:
        yield t


@pytest.fixture
def fail2ban_tree(tmp_path: Path) -> Path:
    """Debian's /etc/fail2ban as the package ships it (sshd enabled by jail.d), and our
    jail.local enabling postfix and dovecot."""
    try:
        stock = debian_filter_d().parent
    except FetchError as e:
        pytest.skip(str(e))
    root = tmp_path / "etc-fail2ban"
    shutil.copytree(stock, root)
    (root / "jail.local").write_text(JAIL_LOCAL)
    return root


def test_an_imported_tree_bans_from_a_forwarded_line(
    tmp_path: Path, net: Topology, fail2ban_tree: Path
) -> None:
    t = net
    imported = tmp_path / "imported.toml"
    done = subprocess.run(
        [
            str(BIN / "appliancectl"),
            "import-fail2ban",
            str(fail2ban_tree),
            "--output",
            str(imported),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "imported 3 jails" in done.stderr and "sshd, postfix, dovecot" in done.stderr
    text = imported.read_text()
    # The test's listener and state: what follows the written [daemon]/[receiver]/[[listeners]].
    start = re.search(r"^\[(notify|jails\.)", text, re.MULTILINE)
    assert start is not None
    workdir = tmp_path / "daemon"
    workdir.mkdir()
    config = LOOPBACK_UDP.format(port=PORT) + "\n" + text[start.start() :]
    ns = ("ip", "netns", "exec", t.server)
    with tcp_listener(t.server, [(t.server_v4, 22), (t.server_v4, 25)]):
        d = Daemon(workdir, config, args=(), prefix=ns).start()
        try:
            assert set(d.ctl("status")["jails"]) == {"sshd", "postfix", "dovecot"}
            assert tcp_connects(t.attacker, t.server_v4, 22)
            for n in range(3):
                logger(
                    PORT,
                    f"Failed password for root from {t.attacker_v4} port {40000 + n} ssh2",
                    tag="sshd",
                    extra=("--rfc3164",),
                    prefix=ns,
                )
            (ban,) = wait_for("the sshd ban", lambda: d.ctl("banned"))
            assert (ban["jail"], ban["address"]) == ("sshd", f"{t.attacker_v4}/32")
            wait_for(
                "port 22 closed to the attacker",
                lambda: not tcp_connects(t.attacker, t.server_v4, 22, timeout=0.5),
            )
            assert tcp_connects(t.attacker, t.server_v4, 25)
        finally:
            d.stop()
