"""TLS for syslog (RFC 5425): the server context a TLS listener hands out, and who may talk.

``server_context(conf)`` builds a pyOpenSSL context with TLS 1.2 as the minimum from the PEM
files that ``conf/certs.read_pair`` reads and checks (the loader calls that too, without
Twisted, so ``appliancectl check`` refuses the files the daemon would refuse).
``refusal(cert, conf)`` decides, once the handshake is done, whether the peer's certificate is
one the listener accepts (fingerprint, name); the chain to ``client_ca`` is OpenSSL's job during
the handshake. ``listeners.py`` builds the context, ``streams.py`` asks ``refusal``.
"""

from __future__ import annotations

import hashlib
from ipaddress import ip_address

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID
from OpenSSL import SSL, crypto
from twisted.internet.interfaces import IOpenSSLServerConnectionCreator
from twisted.internet.ssl import CertificateOptions, TLSVersion
from zope.interface import implementer

from applianced.conf.certs import TLSFileError, read_pair
from applianced.conf.schema import TLSConf

# TLSFileError lives in conf/certs.py (the loader checks the files without Twisted); it stays
# importable from here for the listeners.
__all__ = [
    "ServerTLS",
    "TLSFileError",
    "fingerprint",
    "refusal",
    "server_context",
]


def server_context(conf: TLSConf) -> SSL.Context:
    """A server context for ``conf``; raises TLSFileError saying what is wrong with which file.

    With ``client_ca``, OpenSSL demands a client certificate chaining to it. With
    ``client_fingerprints`` alone (pinned, e.g. self-signed, certificates) it demands a
    certificate but accepts any chain: ``refusal`` then checks the fingerprint."""
    key, chain, cas = read_pair(conf)
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
