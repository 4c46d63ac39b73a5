"""TLS for syslog (RFC 5425): the server context a TLS listener hands out, and who may talk.

``server_context(conf)`` reads the listener's PEM files and builds a pyOpenSSL context with
TLS 1.2 as the minimum; the loader calls it too, so ``appliancectl check`` refuses what the
daemon would refuse. ``refusal(cert, conf)`` decides, once the handshake is done, whether the
peer's certificate is one the listener accepts (fingerprint, name); the chain to
``client_ca`` is OpenSSL's job during the handshake. ``listeners.py`` wires both in.
"""

from __future__ import annotations

import hashlib
import re
from ipaddress import ip_address
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID
from OpenSSL import SSL, crypto
from twisted.internet.interfaces import IOpenSSLServerConnectionCreator
from twisted.internet.ssl import CertificateOptions, TLSVersion
from zope.interface import implementer

from applianced.conf.schema import TLSConf
from applianced.errors import ApplianceError

__all__ = ["ServerTLS", "fingerprint", "normalize_fingerprint", "refusal", "server_context"]


_PEM_CERT = re.compile(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.S)


class TLSFileError(ApplianceError):
    """A certificate or key file that cannot be used; the message says what to do."""


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise TLSFileError(
            f"cannot read the {what} {path}: {e.strerror or e}; check the path and that the "
            "applianced user may read it"
        ) from None


def _certs(data: bytes, path: Path, what: str) -> list[x509.Certificate]:
    # cryptography 38 (Debian 12) has no load_pem_x509_certificates: split the blocks.
    certs = []
    for block in _PEM_CERT.findall(data):
        try:
            certs.append(x509.load_pem_x509_certificate(block))
        except ValueError as e:
            raise TLSFileError(f"{path} ({what}) holds a damaged certificate: {e}") from None
    if not certs:
        raise TLSFileError(
            f"{path} ({what}) holds no PEM certificate (-----BEGIN CERTIFICATE-----)"
        )
    return certs


def file_digest(conf: TLSConf) -> str:
    """SHA-256 over the contents of the listener's files (a renewed certificate changes it)."""
    h = hashlib.sha256()
    for path in (conf.cert, conf.key, conf.client_ca):
        if path is not None:
            h.update(_read(path, "file"))
    return h.hexdigest()


def server_context(conf: TLSConf) -> SSL.Context:
    """A server context for ``conf``; raises TLSFileError saying what is wrong with which file.

    With ``client_ca``, OpenSSL demands a client certificate chaining to it. With
    ``client_fingerprints`` alone (pinned, e.g. self-signed, certificates) it demands a
    certificate but accepts any chain: ``refusal`` then checks the fingerprint."""
    chain = _certs(_read(conf.cert, "certificate"), conf.cert, "cert")
    key_pem = _read(conf.key, "private key")
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError) as e:
        raise TLSFileError(
            f"{conf.key} is not an unencrypted PEM private key ({e}); give the key without a "
            "passphrase (appliancectl tls init writes one)"
        ) from None
    pub = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    if key.public_key().public_bytes(der, pub) != chain[0].public_key().public_bytes(der, pub):
        raise TLSFileError(
            f"the key {conf.key} does not belong to the certificate {conf.cert}; point cert and "
            "key at the two files of one pair (or make a new pair with appliancectl tls init)"
        )
    cas: list[x509.Certificate] = []
    if conf.client_ca is not None:
        cas = _certs(_read(conf.client_ca, "client CA"), conf.client_ca, "client_ca")
    options = CertificateOptions(
        privateKey=crypto.PKey.from_cryptography_key(key),
        certificate=crypto.X509.from_cryptography(chain[0]),
        extraCertChain=[crypto.X509.from_cryptography(c) for c in chain[1:]],
        raiseMinimumTo=TLSVersion.TLSv1_2,
        enableSessions=False,
    )
    context: SSL.Context = options.getContext()
    if cas or conf.client_fingerprints:
        store = context.get_cert_store()
        for ca in cas:
            store.add_cert(crypto.X509.from_cryptography(ca))
        if cas:
            # Tell the client which CA to pick its certificate for.
            for ca in cas:
                context.add_client_ca(crypto.X509.from_cryptography(ca))
        pinned_only = not cas

        def verify(
            conn: SSL.Connection, cert: crypto.X509, errno: int, depth: int, ok: int
        ) -> bool:
            # Pinned certificates are judged by fingerprint after the handshake.
            return bool(ok) or pinned_only

        context.set_verify(SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT, verify)
    return context


@implementer(IOpenSSLServerConnectionCreator)
class ServerTLS:
    """Hands each new connection the current context; a reload swaps ``context`` and the
    connections already open keep theirs."""

    def __init__(self, context: SSL.Context) -> None:
        self.context = context

    def serverConnectionForTLS(self, tlsProtocol: object) -> SSL.Connection:
        return SSL.Connection(self.context, None)


def fingerprint(cert: x509.Certificate) -> str:
    """SHA-256 of the DER certificate, lowercase hex without colons."""
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def normalize_fingerprint(text: str) -> str:
    """``AB:CD:...`` or ``abcd...`` (64 hex digits) -> lowercase hex; ValueError otherwise."""
    hexed = text.replace(":", "").replace(" ", "").lower()
    if len(hexed) != 64 or any(c not in "0123456789abcdef" for c in hexed):
        raise ValueError(
            f"{text!r} is not a SHA-256 fingerprint (64 hex digits, colons allowed); get it "
            "with `openssl x509 -in CLIENT.pem -noout -fingerprint -sha256`"
        )
    return hexed


def _names(cert: x509.Certificate) -> set[str]:
    names = {str(a.value).lower() for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)}
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return names
    names.update(n.lower() for n in san.get_values_for_type(x509.DNSName))
    names.update(str(a) for a in san.get_values_for_type(x509.IPAddress))
    return names


def refusal(peer: crypto.X509 | None, conf: TLSConf) -> str | None:
    """Why the peer with certificate ``peer`` is refused, or None when it is accepted."""
    if conf.client_ca is None and not conf.client_fingerprints:
        return None
    if peer is None:
        return "no client certificate"
    cert = peer.to_cryptography()
    if conf.client_fingerprints and fingerprint(cert) not in conf.client_fingerprints:
        return f"certificate fingerprint {fingerprint(cert)} is not in client_fingerprints"
    if conf.client_names:
        allowed = {_canonical(n) for n in conf.client_names}
        names = {_canonical(n) for n in _names(cert)}
        if not names & allowed:
            shown = ", ".join(sorted(names)) or "none"
            return f"certificate names ({shown}) are not in client_names"
    return None


def _canonical(name: str) -> str:
    try:
        return str(ip_address(name))
    except ValueError:
        return name.lower().rstrip(".")
