"""Syslog over TLS, offline: `appliancectl tls init` (files, modes, chains, refusals), the
listener's config keys, the peer checks and the context swap on reload."""

from __future__ import annotations

import datetime as dt
import json
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID
from OpenSSL import crypto
from twisted.internet.testing import MemoryReactor

from applianced.cli import main
from applianced.conf.load import load_config
from applianced.conf.schema import ListenerConf, TLSConf
from applianced.errors import ConfigError
from applianced.receiver.edge import ReceiverStats
from applianced.receiver.listeners import ListenerService
from applianced.receiver.tls import fingerprint, refusal, server_context
from applianced.tlsinit import (
    CA_DAYS,
    LEAF_DAYS,
    TLSFiles,
    TLSInitError,
    config_snippet,
    init_tls,
    rsyslog_snippet,
)

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


@pytest.fixture
def pki(tmp_path: Path) -> TLSFiles:
    return init_tls(
        tmp_path / "tls", ["appliance.example.org", "192.0.2.1"], ["mx1.example.org"], now=NOW
    )


def cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def signed_by(leaf: x509.Certificate, ca: x509.Certificate) -> bool:
    key = ca.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey)
    assert leaf.signature_hash_algorithm is not None
    try:
        key.verify(
            leaf.signature, leaf.tbs_certificate_bytes, ec.ECDSA(leaf.signature_hash_algorithm)
        )
    except Exception:
        return False
    return leaf.issuer == ca.subject


def openssl_verifies(leaf: Path, ca: Path) -> bool:
    store = crypto.X509Store()
    store.add_cert(crypto.load_certificate(crypto.FILETYPE_PEM, ca.read_bytes()))
    context = crypto.X509StoreContext(
        store, crypto.load_certificate(crypto.FILETYPE_PEM, leaf.read_bytes())
    )
    try:
        context.verify_certificate()
    except crypto.X509StoreContextError:
        return False
    return True


# -- tls init ---------------------------------------------------------------------------------


def test_init_writes_keys_0600_and_certificates(pki: TLSFiles) -> None:
    """CA, server and client files exist; keys are 0600, certificates 0644."""
    client_cert, client_key = pki.clients["mx1.example.org"]
    for key in (pki.ca_key, pki.server_key, client_key):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
    for crt in (pki.ca_cert, pki.server_cert, client_cert):
        assert stat.S_IMODE(crt.stat().st_mode) == 0o644
    assert sorted(p.name for p in pki.directory.iterdir()) == [
        "ca.key",
        "ca.pem",
        "client-mx1.example.org.key",
        "client-mx1.example.org.pem",
        "server.key",
        "server.pem",
    ]


def test_chains_verify_with_p256_and_the_right_extensions(pki: TLSFiles) -> None:
    """Server and client certificates are signed by the CA (cryptography and OpenSSL agree),
    P-256 keys, CA 10 years, leaves 2 years, SAN and extended key usage set."""
    ca = cert(pki.ca_cert)
    server = cert(pki.server_cert)
    client = cert(pki.clients["mx1.example.org"][0])
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    for leaf, path in ((server, pki.server_cert), (client, pki.clients["mx1.example.org"][0])):
        assert signed_by(leaf, ca)
        assert openssl_verifies(path, pki.ca_cert)
        key = leaf.public_key()
        assert isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == "secp256r1"
        assert leaf.not_valid_after - NOW.replace(tzinfo=None) == dt.timedelta(days=LEAF_DAYS)
        assert not leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert ca.not_valid_after - NOW.replace(tzinfo=None) == dt.timedelta(days=CA_DAYS)
    san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["appliance.example.org"]
    assert [str(a) for a in san.get_values_for_type(x509.IPAddress)] == ["192.0.2.1"]
    eku = client.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    eku = server.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]


def test_init_refuses_to_overwrite_and_force_replaces(pki: TLSFiles) -> None:
    """A second init into the same directory is refused and writes nothing; --force makes a
    new CA."""
    before = {p.name: p.read_bytes() for p in pki.directory.iterdir()}
    with pytest.raises(TLSInitError, match="already holds a CA"):
        init_tls(pki.directory, ["appliance.example.org"])
    with pytest.raises(TLSInitError, match=r"refusing to overwrite .*client-mx1"):
        init_tls(pki.directory, ["appliance.example.org"], ["mx1.example.org", "mx2"])
    assert {p.name: p.read_bytes() for p in pki.directory.iterdir()} == before
    init_tls(pki.directory, ["appliance.example.org"], force=True)
    assert pki.ca_cert.read_bytes() != before["ca.pem"]
    assert stat.S_IMODE(pki.ca_key.stat().st_mode) == 0o600


def test_init_on_an_existing_ca_adds_clients(pki: TLSFiles) -> None:
    """With a CA and a server certificate in place, init adds client certificates of that CA."""
    ca_before = pki.ca_cert.read_bytes()
    more = init_tls(pki.directory, [], ["mx2.example.org"])
    assert pki.ca_cert.read_bytes() == ca_before
    assert more.server_names == ("appliance.example.org", "192.0.2.1")
    assert signed_by(cert(more.clients["mx2.example.org"][0]), cert(pki.ca_cert))


@pytest.mark.parametrize("name", ["", "../etc/passwd", "a b", "-rf", "x/y"])
def test_init_refuses_names_that_are_no_host_names(tmp_path: Path, name: str) -> None:
    """Client names become file names: only host names and addresses are taken."""
    with pytest.raises(TLSInitError):
        init_tls(tmp_path, ["appliance.example.org"], [name])
    assert list(tmp_path.iterdir()) == []


def test_snippets_name_every_required_setting(pki: TLSFiles) -> None:
    """The rsyslog snippet forwards with gtls, x509/name, the permitted peer, octet counting."""
    text = rsyslog_snippet(pki, "mx1.example.org")
    for needed in (
        'StreamDriver="gtls"',
        'StreamDriverMode="1"',
        'StreamDriverAuthMode="x509/name"',
        'StreamDriverPermittedPeers="appliance.example.org"',
        'TCP_Framing="octet-counted"',
        "DefaultNetstreamDriverCAFile=",
        "client-mx1.example.org.pem",
        "client-mx1.example.org.key",
        'port="6514"',
    ):
        assert needed in text
    assert 'transport = "tls"' in config_snippet(pki)


def test_the_printed_config_snippet_loads(pki: TLSFiles, tmp_path: Path) -> None:
    """What `tls init` prints for applianced passes the loader unchanged."""
    path = tmp_path / "appliance.toml"
    path.write_text(config_snippet(pki) + '[jails.sshd]\nfilter = "sshd"\n')
    (listener,) = load_config(path).listeners
    assert listener.transport == "tls" and listener.port == 6514
    assert listener.tls is not None and listener.tls.client_names == ("mx1.example.org",)


def test_cli_tls_init(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The verb prints the files and snippets (--json); a refusal exits 2."""
    args = ["tls", "init", "--dir", str(tmp_path / "t"), "--server-name", "a.example.org"]
    assert main([*args, "--client", "mx1", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["server"]["names"] == ["a.example.org"]
    assert Path(out["clients"]["mx1"]["key"]).stat().st_mode & 0o077 == 0
    assert 'StreamDriverPermittedPeers="a.example.org"' in out["rsyslog"]["mx1"]
    assert main([*args, "--client", "mx1"]) == 2
    assert "refusing to overwrite" in capsys.readouterr().err


# -- config keys ------------------------------------------------------------------------------


def listener_config(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "appliance.toml"
    path.write_text(
        '[[listeners]]\ntransport = "tls"\n' + body + '\n[jails.sshd]\nfilter = "sshd"\n'
    )
    return path


def error_of(path: Path) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return info.value


def test_tls_keys_load_relative_to_the_config(pki: TLSFiles, tmp_path: Path) -> None:
    """Paths resolve from the config's directory, fingerprints are normalised, port 6514."""
    fp = fingerprint(cert(pki.clients["mx1.example.org"][0]))
    colons = ":".join(fp[i : i + 2] for i in range(0, 64, 2)).upper()
    path = listener_config(
        tmp_path,
        f'cert = "tls/server.pem"\nkey = "tls/server.key"\nclient_ca = "tls/ca.pem"\n'
        f'client_fingerprints = ["{colons}"]\nclient_names = ["mx1.example.org"]\n',
    )
    (listener,) = load_config(path).listeners
    assert listener.port == 6514
    assert listener.tls == TLSConf(
        cert=pki.server_cert,
        key=pki.server_key,
        client_ca=pki.ca_cert,
        client_fingerprints=(fp,),
        client_names=("mx1.example.org",),
        digest=listener.tls.digest if listener.tls else "",
    )
    assert listener.tls is not None and len(listener.tls.digest) == 64


@pytest.mark.parametrize(
    ("body", "key", "says"),
    [
        ('key = "tls/server.key"', "cert", "needs cert"),
        ('cert = "tls/server.pem"\nkey = "tls/ca.key"', "cert", "does not belong"),
        ('cert = "tls/missing.pem"\nkey = "tls/server.key"', "cert", "cannot read"),
        ('cert = "tls/server.key"\nkey = "tls/server.key"', "cert", "no PEM certificate"),
        ('cert = "tls/server.pem"\nkey = "tls/server.pem"', "cert", "not an unencrypted PEM"),
        (
            'cert = "tls/server.pem"\nkey = "tls/server.key"\nclient_names = ["mx1"]',
            "client_names",
            "needs client_ca",
        ),
        (
            'cert = "tls/server.pem"\nkey = "tls/server.key"\nclient_fingerprints = ["ab"]',
            "client_fingerprints",
            "not a SHA-256",
        ),
    ],
)
def test_tls_key_errors_name_file_line_and_key(
    pki: TLSFiles, tmp_path: Path, body: str, key: str, says: str
) -> None:
    """Missing, unreadable or mismatched files are config errors that say what to do."""
    e = error_of(listener_config(tmp_path, body))
    assert key in str(e) and says in str(e)
    assert "appliance.toml" in str(e)


def test_tls_keys_on_a_tcp_listener_are_refused(pki: TLSFiles, tmp_path: Path) -> None:
    """cert on a tcp listener is an error, not silently plain text."""
    path = tmp_path / "appliance.toml"
    path.write_text('[[listeners]]\ntransport = "tcp"\ncert = "tls/server.pem"\n')
    e = error_of(path)
    assert e.line == 3 and 'only applies to transport = "tls"' in str(e)


# -- peer checks and reload -------------------------------------------------------------------


def test_refusal_by_fingerprint_and_name(pki: TLSFiles, tmp_path: Path) -> None:
    """A pinned fingerprint and an allowed name accept; anything else says why it refuses."""
    client = crypto.load_certificate(
        crypto.FILETYPE_PEM, pki.clients["mx1.example.org"][0].read_bytes()
    )
    fp = fingerprint(client.to_cryptography())
    base = TLSConf(cert=pki.server_cert, key=pki.server_key, client_ca=pki.ca_cert)
    assert refusal(client, base) is None
    assert refusal(None, base) == "no client certificate"
    pinned = TLSConf(cert=pki.server_cert, key=pki.server_key, client_fingerprints=(fp,))
    assert refusal(client, pinned) is None
    other = TLSConf(cert=pki.server_cert, key=pki.server_key, client_fingerprints=("0" * 64,))
    assert "not in client_fingerprints" in (refusal(client, other) or "")
    named = TLSConf(pki.server_cert, pki.server_key, pki.ca_cert, client_names=("MX1.example.org",))
    assert refusal(client, named) is None
    wrong = TLSConf(pki.server_cert, pki.server_key, pki.ca_cert, client_names=("mx2",))
    assert "mx1.example.org" in (refusal(client, wrong) or "")
    open_listener = TLSConf(cert=pki.server_cert, key=pki.server_key)
    assert refusal(None, open_listener) is None


def test_reload_with_renewed_certificates_swaps_the_context(pki: TLSFiles) -> None:
    """A reload whose TLS files changed gives new connections a new context; the socket
    stays bound."""
    tls = TLSConf(cert=pki.server_cert, key=pki.server_key, client_ca=pki.ca_cert, digest="1")
    conf = ListenerConf("tls", "127.0.0.1", 6514, (), 8192, tls=tls)
    reactor = MemoryReactor()  # type: ignore[no-untyped-call]
    service = ListenerService(conf, lambda m: None, ReceiverStats(), reactor)
    service.startService()
    assert len(reactor.tcpServers) == 1
    assert service._tls is not None
    before = service._tls.context
    init_tls(pki.directory, ["appliance.example.org"], force=True)
    renewed = TLSConf(cert=pki.server_cert, key=pki.server_key, client_ca=pki.ca_cert, digest="2")
    service.reconfigure(ListenerConf("tls", "127.0.0.1", 6514, (), 8192, tls=renewed))
    assert service._tls.context is not before
    assert len(reactor.tcpServers) == 1
    assert server_context(renewed) is not None
