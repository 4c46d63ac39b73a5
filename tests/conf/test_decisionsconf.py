"""[decisions]: off when absent, TLS with a checked pair, plain HTTP only on loopback, errors
that name the file, the line and what to do."""

from __future__ import annotations

from pathlib import Path

import pytest

from applianced.conf.load import load_config
from applianced.conf.schema import Config
from applianced.errors import ConfigError
from applianced.tlsinit import init_tls

BASE = """\
[[listeners]]
transport = "udp"
port = 5514

[jails.sshd]
filter = "sshd"
"""


def load(tmp_path: Path, table: str) -> Config:
    path = tmp_path / "appliance.toml"
    path.write_text(BASE + table)
    return load_config(path)


def error(tmp_path: Path, table: str) -> str:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, table)
    return str(info.value)


def test_absent_is_off_and_loopback_may_be_plain(tmp_path: Path) -> None:
    assert load(tmp_path, "").decisions is None
    conf = load(tmp_path, '\n[decisions]\naddress = "::1"\nport = 8081\n').decisions
    assert conf is not None and (conf.address, conf.port, conf.tls) == ("::1", 8081, None)
    assert load(tmp_path, "\n[decisions]\n").decisions is not None  # 127.0.0.1:8080


def test_plain_http_beyond_loopback_is_refused_with_file_line_and_the_fix(tmp_path: Path) -> None:
    message = error(tmp_path, '\n[decisions]\naddress = "0.0.0.0"\n')
    assert f"{tmp_path / 'appliance.toml'}:9" in message
    assert "plain HTTP on 0.0.0.0 would send the bouncers' keys in clear" in message
    assert "appliancectl tls init" in message


def test_tls_needs_both_files_and_a_matching_pair(tmp_path: Path) -> None:
    files = init_tls(tmp_path / "tls", ["appliance.example.org"], [], force=False)
    conf = load(
        tmp_path,
        f'\n[decisions]\naddress = "0.0.0.0"\ncert = "{files.server_cert}"\n'
        f'key = "{files.server_key}"\n',
    ).decisions
    assert conf is not None and conf.tls is not None and conf.tls.digest
    message = error(tmp_path, f'\n[decisions]\ncert = "{files.server_cert}"\n')
    assert "TLS needs both cert and key; add key" in message
    message = error(
        tmp_path, f'\n[decisions]\ncert = "{files.server_cert}"\nkey = "{files.ca_key}"\n'
    )
    assert "does not belong to the certificate" in message
