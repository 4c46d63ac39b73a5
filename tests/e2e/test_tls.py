"""End to end over TLS (RFC 5425): certificates from the real ``appliancectl tls init``, the
real daemon (--dry-run) with a ``transport = "tls"`` listener, and a real client: Debian's
rsyslogd with rsyslog-gnutls, run as an unprivileged foreground process with its own config
and work directory (input: imtcp on loopback, fed by logger; no /dev/log), forwarding
octet-counted with a client certificate. Clients without a certificate or with one from
another CA are refused, counted, and get nobody banned.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from applianced.tlsinit import init_tls
from tests.e2e.daemon import BIN, LOOPBACK_UDP, SSHD_JAIL, Daemon, free_port, logger, wait_for

GTLS = Path("/usr/lib/x86_64-linux-gnu/rsyslog/lmnsd_gtls.so")
FAILURE = "Failed password for invalid user admin from {address} port 4242 ssh2"

CONFIG = (
    LOOPBACK_UDP
    + """
[[listeners]]
transport = "tls"
address = "127.0.0.1"
port = {tls_port}
cert = "tls/server.pem"
key = "tls/server.key"
client_ca = "tls/ca.pem"
client_names = ["mx1.example.org"]
"""
    + SSHD_JAIL
)


def tls_init(directory: Path, *clients: str) -> None:
    args = ["tls", "init", "--dir", str(directory), "--server-name", "localhost"]
    args += ["--server-name", "127.0.0.1"]
    for client in clients:
        args += ["--client", client]
    subprocess.run([str(BIN / "appliancectl"), *args], check=True, capture_output=True, timeout=30)


@pytest.fixture
def appliance(tmp_path: Path) -> Iterator[tuple[Daemon, int]]:
    tls_init(tmp_path / "tls", "mx1.example.org")
    # The same client name from another CA (in-process: the CLI path is covered above).
    init_tls(tmp_path / "other", ["localhost"], ["mx1.example.org"])
    tls_port = free_port()
    d = Daemon(tmp_path, CONFIG.format(port=free_port(), tls_port=tls_port))
    try:
        yield d.start(), tls_port
    finally:
        d.stop()


def frame(message: str) -> bytes:
    data = f"<38>Nov 22 10:00:01 mx1 sshd[42]: {message}".encode()
    return str(len(data)).encode() + b" " + data


# -- rsyslogd, the real client ----------------------------------------------------------------


class Rsyslogd:
    """rsyslogd -n on its own config: imtcp on a loopback port in, omfwd over TLS out.
    Run as ``nobody`` when the tests run as root, in a directory that user owns."""

    def __init__(self, pki: Path, tls_port: int) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="applianced-rsyslog-"))
        self.in_port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        for name in ("ca.pem", "client-mx1.example.org.pem", "client-mx1.example.org.key"):
            shutil.copy(pki / name, self.dir / name)
        (self.dir / "work").mkdir()
        (self.dir / "rsyslog.conf").write_text(f"""\
global(
  workDirectory="{self.dir}/work"
  DefaultNetstreamDriverCAFile="{self.dir}/ca.pem"
  DefaultNetstreamDriverCertFile="{self.dir}/client-mx1.example.org.pem"
  DefaultNetstreamDriverKeyFile="{self.dir}/client-mx1.example.org.key"
)
module(load="imtcp")
input(type="imtcp" address="127.0.0.1" port="{self.in_port}")
*.* action(type="omfwd" protocol="tcp" target="127.0.0.1" port="{tls_port}"
  StreamDriver="gtls" StreamDriverMode="1" StreamDriverAuthMode="x509/name"
  StreamDriverPermittedPeers="localhost" TCP_Framing="octet-counted"
  action.resumeRetryCount="-1" action.resumeInterval="1")
""")
        self.prefix: list[str] = []
        if os.geteuid() == 0:
            nobody = pwd.getpwnam("nobody")
            for path in (self.dir, *self.dir.rglob("*")):
                os.chown(path, nobody.pw_uid, nobody.pw_gid)
            self.prefix = [
                "setpriv",
                f"--reuid={nobody.pw_uid}",
                f"--regid={nobody.pw_gid}",
                "--clear-groups",
            ]
        (self.dir / "client-mx1.example.org.key").chmod(0o600)

    def start(self) -> Rsyslogd:
        log = (self.dir / "rsyslogd.log").open("wb")
        self.proc = subprocess.Popen(
            [
                *self.prefix,
                "rsyslogd",
                "-n",
                "-f",
                str(self.dir / "rsyslog.conf"),
                "-i",
                str(self.dir / "rsyslogd.pid"),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        wait_for("rsyslogd to listen", self._listens, timeout=15)
        return self

    def _listens(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"rsyslogd exited with {self.proc.returncode}:\n{self.output}")
        try:
            socket.create_connection(("127.0.0.1", self.in_port), timeout=1).close()
        except OSError:
            return False
        return True

    @property
    def output(self) -> str:
        return (self.dir / "rsyslogd.log").read_text(errors="replace")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        shutil.rmtree(self.dir, ignore_errors=True)


needs_rsyslog = pytest.mark.skipif(
    shutil.which("rsyslogd") is None or not GTLS.exists() or shutil.which("logger") is None,
    reason="needs Debian's rsyslog, rsyslog-gnutls and util-linux logger (./dev installs them)",
)


@needs_rsyslog
def test_rsyslog_with_a_client_certificate_gets_the_failures_banned(
    appliance: tuple[Daemon, int], tmp_path: Path
) -> None:
    """rsyslogd forwards over TLS with a certificate from `tls init`: the address is banned."""
    d, tls_port = appliance
    client = Rsyslogd(tmp_path / "tls", tls_port)
    try:
        client.start()
        for _ in range(3):
            logger(
                client.in_port,
                FAILURE.format(address="203.0.113.7"),
                tag="sshd",
                transport="tcp",
                extra=("--octet-count", "--rfc3164"),
            )
        wait_for("the ban", lambda: "203.0.113.7/32" in d.banned(), timeout=30)
    except AssertionError as e:
        raise AssertionError(f"{e}\nrsyslogd:\n{client.output}\napplianced:\n{d.output}") from e
    finally:
        client.stop()
    stats = d.receiver()
    assert stats["received_tls"] >= 3
    assert stats["tls_refused"] == 0
    why = d.ctl("why", "203.0.113.7")
    assert any("Failed password" in line for line in why["history"][0]["lines"])


def _send_tls(port: int, context: ssl.SSLContext) -> None:
    """Handshake and send three failures; the server refuses, during the handshake (TLS 1.2)
    or right after it (TLS 1.3, where the client finishes first)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        try:
            with context.wrap_socket(raw, server_hostname="localhost") as s:
                for _ in range(3):
                    s.sendall(frame(FAILURE.format(address="198.51.100.9")))
                assert s.recv(1) == b"", "the server kept a refused peer's connection open"
        except (ssl.SSLError, ConnectionError):
            pass


def _client_context(tmp_path: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(tmp_path / "tls" / "ca.pem"))
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def test_a_client_without_a_certificate_is_refused_and_counted(
    appliance: tuple[Daemon, int], tmp_path: Path
) -> None:
    """No client certificate: refused, counted in tls_refused, nobody banned."""
    d, tls_port = appliance
    _send_tls(tls_port, _client_context(tmp_path))
    wait_for("the refusal to be counted", lambda: d.receiver()["tls_refused"] == 1)
    assert d.receiver()["received_tls"] == 0
    assert d.banned() == set()
    assert "refused a TLS peer 127.0.0.1" in d.output


def test_a_client_certificate_from_another_ca_is_refused_and_counted(
    appliance: tuple[Daemon, int], tmp_path: Path
) -> None:
    """A certificate with the right name from another CA: refused, counted, nobody banned."""
    d, tls_port = appliance
    for version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
        context = _client_context(tmp_path)
        context.maximum_version = version
        other = tmp_path / "other"
        context.load_cert_chain(
            other / "client-mx1.example.org.pem", other / "client-mx1.example.org.key"
        )
        _send_tls(tls_port, context)
    wait_for("the refusals to be counted", lambda: d.receiver()["tls_refused"] == 2)
    assert d.receiver()["received_tls"] == 0
    assert d.banned() == set()


def test_a_good_certificate_with_a_name_not_allowed_is_refused(
    appliance: tuple[Daemon, int], tmp_path: Path
) -> None:
    """Signed by client_ca but its name is not in client_names: refused after the handshake."""
    d, tls_port = appliance
    tls_init(tmp_path / "tls", "intruder.example.org")  # the CA is kept, a client is added
    context = _client_context(tmp_path)
    pki = tmp_path / "tls"
    context.load_cert_chain(
        pki / "client-intruder.example.org.pem", pki / "client-intruder.example.org.key"
    )
    _send_tls(tls_port, context)
    wait_for("the refusal", lambda: d.receiver()["tls_refused"] == 1)
    assert d.banned() == set()
    assert "not in client_names" in d.output


def test_reload_takes_renewed_certificates(appliance: tuple[Daemon, int], tmp_path: Path) -> None:
    """After `tls init --force` (a new CA) and a reload, the old client certificate is refused
    and the new one is accepted, on the same socket."""
    d, tls_port = appliance
    pki, old = tmp_path / "tls", tmp_path / "old"
    old.mkdir()
    for name in ("client-mx1.example.org.pem", "client-mx1.example.org.key"):
        shutil.copy(pki / name, old / name)
    init_tls(pki, ["localhost", "127.0.0.1"], ["mx1.example.org"], force=True)
    result = d.ctl("reload")
    assert result["listeners"]["updated"] == [f"tls/127.0.0.1:{tls_port}"], result
    context = _client_context(tmp_path)
    context.load_cert_chain(old / "client-mx1.example.org.pem", old / "client-mx1.example.org.key")
    _send_tls(tls_port, context)
    wait_for("the old certificate refused", lambda: d.receiver()["tls_refused"] == 1)
    context = _client_context(tmp_path)
    context.load_cert_chain(pki / "client-mx1.example.org.pem", pki / "client-mx1.example.org.key")
    with (
        socket.create_connection(("127.0.0.1", tls_port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as s,
    ):
        for _ in range(3):
            s.sendall(frame(FAILURE.format(address="198.51.100.9")))
        wait_for("the ban", lambda: "198.51.100.9/32" in d.banned())
    assert d.receiver()["received_tls"] == 3


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1_1 is deprecated:DeprecationWarning")
def test_tls_1_1_is_refused(appliance: tuple[Daemon, int], tmp_path: Path) -> None:
    """TLS 1.2 is the minimum: a TLS 1.1 client does not get a session."""
    d, tls_port = appliance
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        context.minimum_version = ssl.TLSVersion.TLSv1_1
        context.maximum_version = ssl.TLSVersion.TLSv1_1
    except (ValueError, ssl.SSLError):
        pytest.skip("this OpenSSL cannot even offer TLS 1.1")
    with (
        socket.create_connection(("127.0.0.1", tls_port), timeout=10) as raw,
        pytest.raises((ssl.SSLError, ConnectionError)),
    ):
        context.wrap_socket(raw, server_hostname="localhost").close()
    wait_for("the refusal", lambda: d.receiver()["tls_refused"] == 1)
