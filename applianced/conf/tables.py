"""The daemon's other tables of a config: ``[metrics]`` (the Prometheus endpoint),
``[state]`` (SQLite, or cluster mode on PostgreSQL), ``[notify]`` (ban mails) and
``[decisions]`` (the stream for CrowdSec bouncers). Called by ``load.py``.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Mapping
from ipaddress import ip_address
from pathlib import Path
from typing import Any

from applianced.conf.certs import TLSFileError, file_digest, read_pair
from applianced.conf.schema import DecisionsConf, MetricsConf, NotifyConf, StateConf, TLSConf
from applianced.conf.tomlread import TomlReader, check_bind_address, positive_duration

_NOTIFY = {f.replace("sender", "from") for f in NotifyConf.__dataclass_fields__}
_METRICS = {"enabled", "address", "port"}
_DECISIONS = {"address", "port", "cert", "key"}
_STATE = {"backend", "dsn", "password_file", "node", "share_failures"}
_NODE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")


def read_metrics(r: TomlReader, raw: Mapping[str, Any]) -> MetricsConf:
    """[metrics]: the optional Prometheus endpoint (metrics.py)."""
    keys = ("metrics",)
    t = r.table(raw, keys, _METRICS)
    d = MetricsConf()
    address = r.typed(t.get("address", d.address), (*keys, "address"), str, "a string")
    r.convert(address, (*keys, "address"), check_bind_address)
    return MetricsConf(
        enabled=r.typed(t.get("enabled", d.enabled), (*keys, "enabled"), bool, "true or false"),
        address=address,
        port=r.int_in(t.get("port", d.port), (*keys, "port"), 1, 65535),
    )


def read_decisions(r: TomlReader, raw: Mapping[str, Any]) -> DecisionsConf | None:
    """[decisions]: the stream CrowdSec bouncers pull (decisions/server.py); none without the
    table. TLS with ``cert`` and ``key`` (read and checked here); plain HTTP only on loopback,
    as the bouncers' keys cross the wire in a header."""
    keys = ("decisions",)
    if "decisions" not in raw:
        return None
    t = r.table(raw, keys, _DECISIONS)
    d = DecisionsConf()
    address = r.typed(t.get("address", d.address), (*keys, "address"), str, "a string")
    r.convert(address, (*keys, "address"), check_bind_address)
    port = r.int_in(t.get("port", d.port), (*keys, "port"), 1, 65535)
    if ("cert" in t) != ("key" in t):
        missing = "key" if "cert" in t else "cert"
        raise r.error(
            (*keys, "cert" if missing == "key" else "key"),
            f'TLS needs both cert and key; add {missing} = "PATH" (PEM; '
            "`appliancectl tls init` writes a server certificate and its key)",
        )
    if "cert" not in t:
        if not ip_address(address).is_loopback:
            raise r.error(
                (*keys, "address"),
                f"plain HTTP on {address} would send the bouncers' keys in clear; add "
                'cert = "PATH" and key = "PATH" (`appliancectl tls init --server-name '
                "THIS-HOST` makes them) or listen on 127.0.0.1 or ::1",
            )
        return DecisionsConf(address=address, port=port)
    tls = TLSConf(
        cert=r.path_of(t["cert"], (*keys, "cert")), key=r.path_of(t["key"], (*keys, "key"))
    )
    try:
        read_pair(tls)
        digest = file_digest(tls)
    except TLSFileError as e:
        raise r.error((*keys, "cert"), str(e)) from None
    return DecisionsConf(
        address=address, port=port, tls=TLSConf(cert=tls.cert, key=tls.key, digest=digest)
    )


def read_state(r: TomlReader, raw: Mapping[str, Any]) -> StateConf:
    """[state]: the embedded SQLite store, or cluster mode on PostgreSQL."""
    keys = ("state",)
    t = r.table(raw, keys, _STATE)
    backend = r.choice(t.get("backend", "sqlite"), (*keys, "backend"), ("sqlite", "postgresql"))
    share = r.typed(
        t.get("share_failures", False), (*keys, "share_failures"), bool, "true or false"
    )
    if share and backend != "postgresql":
        raise r.error(
            (*keys, "share_failures"),
            'sharing failures needs cluster mode (backend = "postgresql"); remove the key',
        )
    node = r.typed(t.get("node", socket.gethostname()), (*keys, "node"), str, "a string")
    if not _NODE.fullmatch(node):
        raise r.error(
            (*keys, "node"),
            f"{node!r} is not a node name: 1 to 63 letters, digits, '.', '_' or '-'",
        )
    password_file = None
    if "password_file" in t:
        password_file = r.path_of(t["password_file"], (*keys, "password_file"))
        r.convert(password_file, (*keys, "password_file"), _private_file)
    dsn = r.typed(t.get("dsn", ""), (*keys, "dsn"), str, "a string")
    if backend == "postgresql":
        r.convert(dsn, (*keys, "dsn"), _check_dsn)
    return StateConf(
        backend=backend, dsn=dsn, password_file=password_file, node=node, share_failures=share
    )


def read_notify(r: TomlReader, raw: Mapping[str, Any]) -> NotifyConf:
    """[notify]: where ban mails go and how (enforcement/notify.py reads it)."""
    keys = ("notify",)
    t = r.table(raw, keys, _NOTIFY)
    d = NotifyConf()

    def k(key: str) -> tuple[str, ...]:
        return (*keys, key)

    def duration(key: str, default: float) -> float:
        return r.convert(t.get(key, default), k(key), positive_duration)

    to = t.get("to", [])
    to = [to] if isinstance(to, str) else r.typed(to, k("to"), list, "a list of addresses")
    starttls = r.choice(
        t.get("starttls", d.starttls), k("starttls"), ("required", "optional", "off")
    )
    smarthost = r.typed(t.get("smarthost", d.smarthost), k("smarthost"), str, "a host")
    credentials = _credentials(r, t, k("credentials_file"), starttls, smarthost)
    servers = r.table(raw, k("whois_servers"), set(t.get("whois_servers") or ()))
    for name, target in servers.items():
        r.typed(target, (*k("whois_servers"), name), str, 'a "host:port"')
    return NotifyConf(
        to=tuple(_mail_address(r, a, (*k("to"), i)) for i, a in enumerate(to)),
        sender=_mail_address(r, t.get("from", d.sender), k("from")),
        smarthost=smarthost,
        port=r.int_in(t.get("port", d.port), k("port"), 1, 65535),
        starttls=starttls,
        ca_file=r.path_of(t["ca_file"], k("ca_file")) if "ca_file" in t else None,
        credentials_file=credentials,
        sendmail=r.path_of(t["sendmail"], k("sendmail")) if "sendmail" in t else None,
        timeout=duration("timeout", d.timeout),
        max_per_minute=r.int_in(
            t.get("max_per_minute", d.max_per_minute), k("max_per_minute"), 1, 10_000
        ),
        digest_interval=duration("digest_interval", d.digest_interval),
        max_lines=r.int_in(t.get("max_lines", d.max_lines), k("max_lines"), 0, 1000),
        backlog=r.int_in(t.get("backlog", d.backlog), k("backlog"), 1, 1_000_000),
        retry_first=duration("retry_first", d.retry_first),
        retry_max=duration("retry_max", d.retry_max),
        reverse_dns=r.typed(
            t.get("reverse_dns", d.reverse_dns), k("reverse_dns"), bool, "true or false"
        ),
        whois_server=r.typed(
            t.get("whois_server", d.whois_server), k("whois_server"), str, 'a "host[:port]"'
        ),
        whois_servers=tuple((str(n), str(v)) for n, v in servers.items()),
        whois_timeout=duration("whois_timeout", d.whois_timeout),
        whois_cache=duration("whois_cache", d.whois_cache),
    )


def _mail_address(r: TomlReader, value: Any, where: tuple[str | int, ...]) -> str:
    text = r.typed(value, where, str, "a mail address")
    if not re.fullmatch(r"[^@\s<>,;\"]+@[^@\s<>,;\"]+", text):
        raise r.error(where, f"{text!r} is not a mail address (user@example.org)")
    return text


def _credentials(
    r: TomlReader, t: Mapping[str, Any], keys: tuple[str, ...], starttls: str, smarthost: str
) -> Path | None:
    """The SMTP AUTH credentials file (``keys``: where), private, and never sent in clear."""
    if "credentials_file" not in t:
        return None
    credentials = r.path_of(t["credentials_file"], keys)
    r.convert(credentials, keys, _private_file)
    if starttls != "required" and smarthost not in ("localhost", "127.0.0.1", "::1"):
        raise r.error(
            keys,
            'SMTP AUTH would send the password in clear: set starttls = "required" '
            "(or use a smarthost on loopback)",
        )
    return credentials


def _private_file(path: Path) -> None:
    """A secret must exist and be readable by its owner only (mode 0600 or 0400)."""
    import stat

    try:
        mode = path.stat().st_mode
    except OSError as e:
        raise ValueError(f"cannot read {path}: {e.strerror}") from None
    if not stat.S_ISREG(mode):
        raise ValueError(f"{path} is not a regular file")
    if mode & 0o077:
        raise ValueError(
            f"{path} is readable by group or others (mode {stat.S_IMODE(mode):04o}); it holds "
            f"a password: chmod 600 {path} and chown it to the service's user"
        )


def _check_dsn(dsn: str) -> None:
    """A libpq connection string that holds no password (it would show in `ps` and logs)."""
    from psycopg import ProgrammingError
    from psycopg.conninfo import conninfo_to_dict

    if not dsn:
        raise ValueError(
            'backend = "postgresql" needs a dsn, e.g.'
            ' "host=db.example.org dbname=applianced user=applianced"'
        )
    try:
        params = conninfo_to_dict(dsn)
    except ProgrammingError:
        raise ValueError(
            "is not a libpq connection string; write it as"
            ' "host=HOST port=5432 dbname=DB user=USER" or postgresql://USER@HOST/DB'
        ) from None
    if "password" in params:
        raise ValueError(
            "holds a password; remove it from the dsn and put it in password_file (mode 0600)"
            " or in the environment variable APPLIANCED_DB_PASSWORD"
        )
