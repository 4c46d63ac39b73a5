"""End to end through the standard forwarders: the real daemon (--dry-run) on loopback UDP and
TCP, and the real forwarder in front of it, run in the foreground on its own config and work
directory (its input an imtcp/network() source on loopback, fed RFC 3164 lines by ``logger`` as
a mail server's local syslog would hold them; no /dev/log, no system service):

- rsyslogd with its three standard templates, one input and ruleset each:
  RSYSLOG_ForwardFormat over TCP (LF framing), RSYSLOG_SyslogProtocol23Format over TCP
  octet-counted, RSYSLOG_TraditionalForwardFormat over UDP;
- syslog-ng (Debian's, unpacked beside rsyslog: tests/debian_syslog_ng.py) with its network()
  destination (RFC 3164 over TCP) and its syslog() destination (RFC 5424, octet-counted TCP).

Each forwarding path carries three dovecot and three postfix smtpd SASL failures of addresses
of its own; each address must be banned by its jail. RSYSLOG_SyslogProtocol23Format's MSG
starts with a space and its APP-NAME for postfix/smtpd is "postfix": before the parser and the
postfix filters knew it, that path banned nobody and no counter moved.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.debian_syslog_ng import FetchError, syslog_ng
from tests.e2e.daemon import LOOPBACK, Daemon, free_port, logger, wait_for

CONFIG = (
    LOOPBACK
    + """
[defaults]
bantime = "1h"
maxretry = 3

[jails.dovecot]
filter = "dovecot"
ports = [143]

[jails.postfix-sasl]
filter = "postfix-sasl"
ports = [25]
"""
)
DOVECOT = (
    "imap-login: Disconnected (auth failed, 1 attempts in 2 secs): user=<bob>, method=PLAIN, "
    "rip={address}, lip=192.0.2.1, session=<q1w2e3r4>"
)
POSTFIX = "warning: unknown[{address}]: SASL LOGIN authentication failed: UGFzc3dvcmQ6"
# (forwarding path, its dovecot attacker, its postfix attacker)
RSYSLOG_PATHS = [
    ("RSYSLOG_ForwardFormat", "203.0.113.21", "203.0.113.31"),
    ("RSYSLOG_SyslogProtocol23Format", "203.0.113.22", "203.0.113.32"),
    ("RSYSLOG_TraditionalForwardFormat", "203.0.113.23", "203.0.113.33"),
]
SYSLOG_NG_PATHS = [
    ("network", "198.51.100.21", "198.51.100.31"),
    ("syslog", "198.51.100.22", "198.51.100.32"),
]


@pytest.fixture
def appliance(tmp_path: Path) -> Iterator[tuple[Daemon, int]]:
    port = free_port()
    d = Daemon(tmp_path, CONFIG.format(port=port))
    try:
        yield d.start(), port
    finally:
        d.stop()


class Forwarder:
    """A forwarder process in the foreground (``argv``), one loopback input port a path."""

    def __init__(self, name: str, paths: int) -> None:
        self.name = name
        self.dir = Path(tempfile.mkdtemp(prefix=f"applianced-{name}-"))
        self.in_ports = [free_port() for _ in range(paths)]
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, argv: list[str], env: dict[str, str] | None = None) -> Forwarder:
        log = (self.dir / "forwarder.log").open("wb")
        self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env)
        log.close()
        wait_for(f"{self.name} to listen", self._listens, timeout=30)
        return self

    def _listens(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"{self.name} exited with {self.proc.returncode}:\n{self.output}")
        for port in self.in_ports:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
            except OSError:
                return False
        return True

    @property
    def output(self) -> str:
        return (self.dir / "forwarder.log").read_text(errors="replace")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        shutil.rmtree(self.dir, ignore_errors=True)


def rsyslog_config(work: Path, in_ports: list[int], port: int) -> str:
    """One imtcp input per template, each bound to a ruleset forwarding with that template."""
    transports = {
        "RSYSLOG_ForwardFormat": 'protocol="tcp"',
        "RSYSLOG_SyslogProtocol23Format": 'protocol="tcp" TCP_Framing="octet-counted"',
        "RSYSLOG_TraditionalForwardFormat": 'protocol="udp"',
    }
    text = f'global(workDirectory="{work}")\nmodule(load="imtcp")\n'
    for (template, _, _), in_port in zip(RSYSLOG_PATHS, in_ports, strict=True):
        text += f"""\
ruleset(name="{template}") {{
  action(type="omfwd" target="127.0.0.1" port="{port}" {transports[template]}
    template="{template}" action.resumeRetryCount="-1" action.resumeInterval="1")
}}
input(type="imtcp" address="127.0.0.1" port="{in_port}" ruleset="{template}")
"""
    return text


def syslog_ng_config(in_ports: list[int], port: int) -> str:
    """One network() source per destination, each logged to that destination only (the two
    destinations name the same peer: each needs a persist-name of its own)."""
    text = "@version: 3.38\noptions { use-dns(no); keep-hostname(yes); };\n"
    for (driver, _, _), in_port in zip(SYSLOG_NG_PATHS, in_ports, strict=True):
        text += f"""\
source s_{driver} {{ network(ip("127.0.0.1") port({in_port}) transport("tcp")); }};
destination d_{driver} {{
  {driver}("127.0.0.1" port({port}) transport("tcp") persist-name("{driver}"));
}};
log {{ source(s_{driver}); destination(d_{driver}); }};
"""
    return text


def failures(in_port: int, dovecot: str, postfix: str) -> None:
    """Three failures of each attacker, as the mail server's syslog hands them on."""
    for _ in range(3):
        logger(in_port, DOVECOT.format(address=dovecot), tag="dovecot", transport="tcp",
               extra=("--rfc3164",))  # fmt: skip
        logger(in_port, POSTFIX.format(address=postfix), tag="postfix/smtpd", transport="tcp",
               extra=("--rfc3164", "--id=4242"))  # fmt: skip


def assert_banned(d: Daemon, forwarder: Forwarder, paths: list[tuple[str, str, str]]) -> None:
    for in_port, (_, dovecot, postfix) in zip(forwarder.in_ports, paths, strict=True):
        failures(in_port, dovecot, postfix)
    try:
        for path, dovecot, postfix in paths:
            for jail, address in (("dovecot", dovecot), ("postfix-sasl", postfix)):
                wait_for(
                    f"{address} banned in {jail} through {forwarder.name} {path}",
                    lambda a=address, j=jail: any(
                        b["address"] == f"{a}/32" and b["jail"] == j for b in d.ctl("banned")
                    ),
                    timeout=30,
                )
    except AssertionError as e:
        raise AssertionError(
            f"{e}\n{forwarder.name}:\n{forwarder.output}\napplianced:\n{d.output}\n"
            f"status: {d.ctl('status')}"
        ) from e
    receiver = d.receiver()
    assert receiver["parse_errors"] == 0 and receiver["frame_errors"] == 0


needs_rsyslog = pytest.mark.skipif(
    shutil.which("rsyslogd") is None or shutil.which("logger") is None,
    reason="needs Debian's rsyslog and util-linux logger (./dev installs them)",
)


@needs_rsyslog
def test_rsyslog_s_standard_templates_get_the_same_attackers_banned(
    appliance: tuple[Daemon, int],
) -> None:
    d, port = appliance
    rsyslogd = Forwarder("rsyslogd", len(RSYSLOG_PATHS))
    (rsyslogd.dir / "work").mkdir()
    conf = rsyslogd.dir / "rsyslog.conf"
    conf.write_text(rsyslog_config(rsyslogd.dir / "work", rsyslogd.in_ports, port))
    try:
        rsyslogd.start(["rsyslogd", "-n", "-f", str(conf), "-i", str(rsyslogd.dir / "pid")])
        assert_banned(d, rsyslogd, RSYSLOG_PATHS)
    finally:
        rsyslogd.stop()


@pytest.mark.skipif(shutil.which("logger") is None, reason="needs util-linux logger")
def test_syslog_ng_s_network_and_syslog_destinations_get_the_same_attackers_banned(
    appliance: tuple[Daemon, int],
) -> None:
    try:
        found = syslog_ng()
    except FetchError as e:
        pytest.skip(str(e))
    d, port = appliance
    forwarder = Forwarder("syslog-ng", len(SYSLOG_NG_PATHS))
    conf = forwarder.dir / "syslog-ng.conf"
    conf.write_text(syslog_ng_config(forwarder.in_ports, port))
    try:
        forwarder.start(found.argv(conf, forwarder.dir), found.env())
        assert_banned(d, forwarder, SYSLOG_NG_PATHS)
    finally:
        forwarder.stop()
