"""``appliancectl tls init``: a private CA, a server certificate and client certificates for
syslog over TLS (RFC 5425), and the snippets that put them to use.

ECDSA P-256 keys (every TLS stack rsyslog, syslog-ng and Kerio link against reads them), the CA
valid 10 years, the leaves 2 years. Key files are created with mode 0600 and nothing is
overwritten unless ``force``. Called by ``cli/tls.py``; the listener side is ``receiver/tls.py``.
"""

from __future__ import annotations

import datetime as dt
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from ipaddress import ip_address
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from applianced.errors import ApplianceError

__all__ = [
    "CA_DAYS",
    "LEAF_DAYS",
    "TLSFiles",
    "TLSInitError",
    "config_snippet",
    "init_tls",
    "rsyslog_snippet",
]

CA_DAYS = 3650
LEAF_DAYS = 730
_SKEW = dt.timedelta(minutes=5)  # valid a little before now: the peers' clocks differ
_NAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._-]{0,252})$")


class TLSInitError(ApplianceError):
    """Refused: an existing file, a bad name. The message says what to do."""


@dataclass(frozen=True, slots=True)
class TLSFiles:
    """What ``init_tls`` wrote (absolute paths)."""

    directory: Path
    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path
    server_names: tuple[str, ...]
    clients: dict[str, tuple[Path, Path]] = field(default_factory=dict)  # name -> (cert, key)


def _plan(directory: Path, clients: Sequence[str]) -> TLSFiles:
    return TLSFiles(
        directory=directory,
        ca_cert=directory / "ca.pem",
        ca_key=directory / "ca.key",
        server_cert=directory / "server.pem",
        server_key=directory / "server.key",
        server_names=(),
        clients={
            name: (directory / f"client-{name}.pem", directory / f"client-{name}.key")
            for name in clients
        },
    )


def _check_name(name: str, what: str) -> None:
    try:
        ip_address(name)
        return
    except ValueError:
        pass
    if not _NAME.match(name) or ".." in name:
        raise TLSInitError(
            f"{what} {name!r} is not a host name or an IP address (letters, digits, '.', '-', "
            "'_'); use the name the peer is known by, e.g. mx1.example.org"
        )


def _subject_alt_name(names: Sequence[str]) -> x509.SubjectAlternativeName:
    entries: list[x509.GeneralName] = []
    for name in names:
        try:
            entries.append(x509.IPAddress(ip_address(name)))
        except ValueError:
            entries.append(x509.DNSName(name))
    return x509.SubjectAlternativeName(entries)


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _ca(key: ec.EllipticCurvePrivateKey, now: dt.datetime) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "applianced syslog CA")])
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _SKEW)
        .not_valid_after(now + dt.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .sign(key, hashes.SHA256())
    )


def _leaf(
    names: Sequence[str],
    usage: x509.ObjectIdentifier,
    ca: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    key: ec.EllipticCurvePrivateKey,
    now: dt.datetime,
) -> x509.Certificate:
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _SKEW)
        .not_valid_after(now + dt.timedelta(days=LEAF_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(_subject_alt_name(names), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )


def _write(path: Path, data: bytes, mode: int, force: bool) -> None:
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if force else os.O_EXCL)
    fd = os.open(path, flags, mode)
    try:
        os.fchmod(fd, mode)  # an existing file overwritten with --force gets the mode too
        os.write(fd, data)
    finally:
        os.close(fd)


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def init_tls(
    directory: Path,
    server_names: Sequence[str],
    clients: Sequence[str] = (),
    *,
    force: bool = False,
    now: dt.datetime | None = None,
) -> TLSFiles:
    """Write a CA, a server certificate for ``server_names`` (SAN: DNS names and IPs; the
    first is also the CN) and one client certificate per name of ``clients`` into
    ``directory``.

    When the directory already holds a CA and a server certificate and ``force`` is false,
    they are kept and only the client certificates are added (a new mail server later).
    Refuses, writing nothing, if a file it would write exists and ``force`` is false."""
    for name in server_names:
        _check_name(name, "server name")
    for name in clients:
        _check_name(name, "client name")
    if len(set(clients)) != len(clients):
        raise TLSInitError("a client name is given twice")
    directory = directory.absolute()
    plan = _plan(directory, clients)
    reuse = _reuse(plan, directory, server_names, clients, force)
    now = now or dt.datetime.now(dt.UTC)
    directory.mkdir(parents=True, exist_ok=True, mode=0o755)
    if reuse:
        ca, ca_key = _load_ca(plan.ca_cert, plan.ca_key)
        server_names = _names_of(x509.load_pem_x509_certificate(plan.server_cert.read_bytes()))
    else:
        ca, ca_key = _new_ca_and_server(plan, server_names, now, force)
    for name, (cert_path, key_path) in plan.clients.items():
        key = _key()
        cert = _leaf([name], ExtendedKeyUsageOID.CLIENT_AUTH, ca, ca_key, key, now)
        _write(key_path, _key_pem(key), 0o600, force)
        _write(cert_path, _pem(cert), 0o644, force)
    return TLSFiles(
        directory=directory,
        ca_cert=plan.ca_cert,
        ca_key=plan.ca_key,
        server_cert=plan.server_cert,
        server_key=plan.server_key,
        server_names=tuple(server_names),
        clients=plan.clients,
    )


def _reuse(
    plan: TLSFiles,
    directory: Path,
    server_names: Sequence[str],
    clients: Sequence[str],
    force: bool,
) -> bool:
    """Whether the directory's CA and server certificate are kept (only clients are added);
    raises TLSInitError, before anything is written, when the request cannot be honoured."""
    kept = [plan.ca_cert, plan.ca_key, plan.server_cert, plan.server_key]
    reuse = not force and all(p.exists() for p in kept)
    files = [p for pair in plan.clients.values() for p in pair]
    if not reuse:
        files = kept + files
        if not server_names:
            raise TLSInitError("give the server's name: --server-name appliance.example.org")
    elif not clients:
        raise TLSInitError(
            f"{directory} already holds a CA and a server certificate; add clients with "
            "--client NAME, or pass --force to replace everything"
        )
    existing = [str(p) for p in files if p.exists()]
    if existing and not force:
        raise TLSInitError(
            f"refusing to overwrite {', '.join(existing)}; pass --force to replace them (with "
            "a new CA, every certificate made by the old one stops being accepted) or choose "
            "another --dir"
        )
    return reuse


def _new_ca_and_server(
    plan: TLSFiles, server_names: Sequence[str], now: dt.datetime, force: bool
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """Write a new CA and a server certificate it signs; the CA and its key."""
    ca_key = _key()
    ca = _ca(ca_key, now)
    _write(plan.ca_key, _key_pem(ca_key), 0o600, force)
    _write(plan.ca_cert, _pem(ca), 0o644, force)
    server_key = _key()
    server = _leaf(server_names, ExtendedKeyUsageOID.SERVER_AUTH, ca, ca_key, server_key, now)
    _write(plan.server_key, _key_pem(server_key), 0o600, force)
    _write(plan.server_cert, _pem(server), 0o644, force)
    return ca, ca_key


def _load_ca(cert: Path, key: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    try:
        ca = x509.load_pem_x509_certificate(cert.read_bytes())
        ca_key = serialization.load_pem_private_key(key.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as e:
        raise TLSInitError(f"cannot use the CA in {cert.parent}: {e}; or pass --force") from None
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise TLSInitError(f"{key} is not an ECDSA key; pass --force to make a new CA")
    return ca, ca_key


def _names_of(cert: x509.Certificate) -> list[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return [str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    return [str(n.value) for n in san]


def config_snippet(files: TLSFiles, port: int = 6514) -> str:
    """The ``[[listeners]]`` table for applianced that uses ``files``."""
    names = ", ".join(f'"{n}"' for n in files.clients)
    lines = [
        "[[listeners]]",
        'transport = "tls"',
        'address = "0.0.0.0"',
        f"port = {port}",
        f'cert = "{files.server_cert}"',
        f'key = "{files.server_key}"',
        f'client_ca = "{files.ca_cert}"',
    ]
    if files.clients:
        lines.append(f"client_names = [{names}]")
    lines.append('# allowed_senders = ["192.0.2.25/32"]   # the mail servers, as for TCP')
    return "\n".join(lines) + "\n"


def rsyslog_snippet(
    files: TLSFiles, client: str | None, port: int = 6514, remote_dir: str = "/etc/rsyslog.d/tls"
) -> str:
    """The rsyslog config for mail server ``client``: copy ``ca.pem``, its certificate and
    key to ``remote_dir`` on that machine. Forwards mail and auth logs over TLS, checking the
    appliance's name, octet-counted (RFC 5425)."""
    server = files.server_names[0]
    cert = f"client-{client}.pem" if client else "client-NAME.pem"
    key = f"client-{client}.key" if client else "client-NAME.key"
    return (
        f"# /etc/rsyslog.d/90-applianced.conf on {client or 'each mail server'}; copy "
        f"{files.ca_cert.name}, {cert} and {key} to {remote_dir}/ (key: mode 0600)\n"
        "global(\n"
        f'  DefaultNetstreamDriverCAFile="{remote_dir}/{files.ca_cert.name}"\n'
        f'  DefaultNetstreamDriverCertFile="{remote_dir}/{cert}"\n'
        f'  DefaultNetstreamDriverKeyFile="{remote_dir}/{key}"\n'
        ")\n"
        'mail.*;auth,authpriv.* action(type="omfwd" protocol="tcp" '
        f'target="{server}" port="{port}"\n'
        '  StreamDriver="gtls" StreamDriverMode="1" StreamDriverAuthMode="x509/name"\n'
        f'  StreamDriverPermittedPeers="{server}" TCP_Framing="octet-counted")\n'
    )
