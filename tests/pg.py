"""A private PostgreSQL server for the cluster tests: Debian's binaries, a cluster made with
initdb in a temporary directory, run by an unprivileged user (postgres refuses root), reached
on a UNIX socket in that directory (a file: it works across network namespaces). Password
authentication (scram-sha-256) for the ``applianced`` role, so the password path of cluster
mode is exercised. Always stopped and removed.

``pg_server(netns=NS, tcp=ADDR)`` also runs it inside the network namespace ``NS``, listening
on ``ADDR`` with TLS, set up as the README's cluster steps say (``listen_addresses``,
``ssl = on``, a ``hostssl`` line in ``pg_hba.conf``): ``tcp_dsn`` reaches it with
``sslmode=verify-full`` and ``sslrootcert``, so the tests cross a link they can cut."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg

from applianced.tlsinit import init_tls

__all__ = ["PgServer", "pg_missing", "pg_server"]

USER = "nobody"  # runs the server; owns its files
PASSWORD = "s3cret-Cluster-pw"


def _bin() -> Path | None:
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
    return versions[-1].parent if versions else None


def pg_missing() -> str | None:
    """Why the PostgreSQL tests cannot run here, or None."""
    if os.geteuid() != 0:
        return "needs root (to run postgres as an unprivileged user)"
    if _bin() is None:
        return "needs Debian's postgresql (apt-get install postgresql)"
    return None


class PgServer:
    """One running private cluster; ``dsn`` has no password (``password_file`` holds it)."""

    def __init__(self, root: Path, netns: str | None = None, tcp: str | None = None) -> None:
        bindir = _bin()
        assert bindir is not None
        self.bin = bindir
        self.root = root
        self.data = root / "data"
        self.socket_dir = root / "run"
        self.password_file = root / "password"
        self.dsn = f"host={self.socket_dir} dbname=applianced user=applianced"
        self.log = root / "postgres.log"
        self.netns = netns
        self.tcp = tcp
        self.ca = root / "tls" / "ca.pem"
        self.tcp_dsn = (
            f"host={tcp} dbname=applianced user=applianced"
            f" sslmode=verify-full sslrootcert={self.ca}"
        )

    def _as_user(self, *argv: str) -> None:
        prefix = ["ip", "netns", "exec", self.netns] if self.netns else []
        p = subprocess.run(
            [*prefix, "runuser", "-u", USER, "--", *argv],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            cwd=self.root,
        )
        if p.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed: {p.stdout}{p.stderr}")

    def init(self) -> None:
        pw = self.root / "initdb-password"
        pw.write_text(PASSWORD + "\n")
        self.socket_dir.mkdir()
        for path in (self.root, pw, self.socket_dir):
            shutil.chown(path, USER)
        self._as_user(
            str(self.bin / "initdb"), "-D", str(self.data), "-U", "applianced", "-E", "UTF8",
            "--auth=scram-sha-256", f"--pwfile={pw}", "--no-sync",
        )  # fmt: skip
        pw.unlink()
        if self.tcp is not None:
            self._listen_tls(self.tcp)
        self.start()
        with psycopg.connect(self.dsn.replace("dbname=applianced", "dbname=postgres"),
                             password=PASSWORD, autocommit=True) as conn:  # fmt: skip
            conn.execute("CREATE DATABASE applianced")
        self.password_file.write_text(PASSWORD + "\n")
        self.password_file.chmod(0o600)

    def _listen_tls(self, address: str) -> None:
        """The README's steps on the server: listen on ``address``, TLS on with a certificate
        for it, password logins over TLS from its /24."""
        files = init_tls(self.root / "tls", [address])  # `appliancectl tls init`'s files
        shutil.chown(files.server_key, USER)
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write(
                f"listen_addresses = '{address}'\nssl = on\n"
                f"ssl_cert_file = '{files.server_cert}'\nssl_key_file = '{files.server_key}'\n"
            )
        with (self.data / "pg_hba.conf").open("a") as hba:
            hba.write(f"hostssl applianced applianced {address}/24 scram-sha-256\n")

    def start(self) -> None:
        listen = "" if self.tcp is not None else "-c listen_addresses=''"
        options = f"-k {self.socket_dir} {listen} -c fsync=off"
        self._as_user(
            str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-o", options,
            "-w", "-t", "30", "start",
        )  # fmt: skip

    def stop(self) -> None:
        self._as_user(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")

    def connect(self) -> psycopg.Connection[Any]:
        return psycopg.connect(self.dsn, password=PASSWORD, autocommit=True)

    def query(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        with self.connect() as conn:
            return conn.execute(sql, params).fetchall()


@contextmanager
def pg_server(netns: str | None = None, tcp: str | None = None) -> Iterator[PgServer]:
    """A running private cluster (in ``netns``, on ``tcp`` with TLS when given), stopped and
    deleted on exit whatever happened."""
    pwd.getpwnam(USER)
    root = Path(tempfile.mkdtemp(prefix="applianced-pg-"))
    root.chmod(0o755)
    server = PgServer(root, netns, tcp)
    try:
        server.init()
        yield server
    finally:
        if (server.data / "postmaster.pid").exists():
            subprocess.run(
                ["runuser", "-u", USER, "--", str(server.bin / "pg_ctl"), "-D", str(server.data),
                 "-m", "immediate", "-w", "stop"],
                capture_output=True, timeout=60, check=False,
            )  # fmt: skip
        shutil.rmtree(root, ignore_errors=True)
