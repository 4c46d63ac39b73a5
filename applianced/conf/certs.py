"""A TLS listener's PEM files, read and checked: the certificate chain, its unencrypted key, and
the client CAs, each failure a TLSFileError saying what to do with which file.

ARCHITECTURE. A leaf of conf/: the loader calls ``read_pair``, ``file_digest`` and
``normalize_fingerprint`` while it validates ``[[listeners]]`` (so ``appliancectl check`` needs no
Twisted), and ``receiver/tls.py`` builds its server context from ``read_pair``'s answer.
It uses ``cryptography`` only.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PRIVATE_KEY_TYPES

from applianced.conf.schema import TLSConf
from applianced.errors import ApplianceError

__all__ = ["TLSFileError", "file_digest", "normalize_fingerprint", "read_pair"]


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


def read_pair(
    conf: TLSConf,
) -> tuple[PRIVATE_KEY_TYPES, list[x509.Certificate], list[x509.Certificate]]:
    """The listener's private key, its certificate chain (leaf first) and its client CAs (empty
    without ``client_ca``); raises TLSFileError saying what is wrong with which file."""
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
    return key, chain, cas


def normalize_fingerprint(text: str) -> str:
    """``AB:CD:...`` or ``abcd...`` (64 hex digits) -> lowercase hex; ValueError otherwise."""
    hexed = text.replace(":", "").replace(" ", "").lower()
    if len(hexed) != 64 or any(c not in "0123456789abcdef" for c in hexed):
        raise ValueError(
            f"{text!r} is not a SHA-256 fingerprint (64 hex digits, colons allowed); get it "
            "with `openssl x509 -in CLIENT.pem -noout -fingerprint -sha256`"
        )
    return hexed
