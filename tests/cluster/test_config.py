"""[state]: the embedded store or cluster mode; every error names the file and line, and
the password is never in the DSN, in an error, or readable by others."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from applianced.cluster import postgres
from applianced.conf.load import load_config
from applianced.conf.schema import StateConf
from applianced.errors import ConfigError

BASE = """\
[[listeners]]
transport = "udp"
port = 5514

[jails.sshd]
filter = "sshd"
"""


def load_state(tmp_path: Path, state: str) -> StateConf:
    path = tmp_path / "appliance.toml"
    path.write_text(BASE + "\n[state]\n" + state)
    return load_config(path).state


def error_of(tmp_path: Path, state: str) -> str:
    with pytest.raises(ConfigError) as info:
        load_state(tmp_path, state)
    return str(info.value)


def test_the_default_is_sqlite_on_this_host(tmp_path: Path) -> None:
    path = tmp_path / "appliance.toml"
    path.write_text(BASE)
    state = load_config(path).state
    assert (state.backend, state.node, state.dsn) == ("sqlite", socket.gethostname(), "")


def test_cluster_mode_with_a_password_file(tmp_path: Path) -> None:
    secret = tmp_path / "db.password"
    secret.write_text("hunter2\n")
    secret.chmod(0o600)
    state = load_state(
        tmp_path,
        'backend = "postgresql"\ndsn = "host=db.example dbname=applianced user=appl"\n'
        'password_file = "db.password"\nnode = "mx-1.site-a"\n',
    )
    assert (state.backend, state.password_file, state.node) == ("postgresql", secret, "mx-1.site-a")
    assert not state.share_failures
    shared = load_state(
        tmp_path, 'backend = "postgresql"\ndsn = "host=db dbname=a"\nshare_failures = true\n'
    )
    assert shared.share_failures


def test_errors_name_the_line_and_never_show_the_password(tmp_path: Path) -> None:
    message = error_of(tmp_path, 'backend = "postgresql"\ndsn = "postgresql://u:hunter2@db/x"\n')
    assert "appliance.toml:10: [state.dsn]" in message and "password_file" in message
    assert "hunter2" not in message
    assert "needs a dsn" in error_of(tmp_path, 'backend = "postgresql"\n')
    assert "not a libpq" in error_of(tmp_path, 'backend = "postgresql"\ndsn = "nonsense"\n')
    assert "needs cluster mode" in error_of(tmp_path, "share_failures = true\n")
    assert "true or false" in error_of(tmp_path, 'share_failures = "yes"\n')
    assert "not a node name" in error_of(tmp_path, 'node = "two words"\n')
    assert "'sqlite', 'postgresql'" in error_of(tmp_path, 'backend = "mysql"\n')


def test_a_password_file_readable_by_others_is_refused(tmp_path: Path) -> None:
    (tmp_path / "db.password").write_text("hunter2\n")
    (tmp_path / "db.password").chmod(0o644)
    message = error_of(tmp_path, 'password_file = "db.password"\n')
    assert "chmod 600" in message and "hunter2" not in message


def test_every_connection_finds_a_dead_path_unless_the_dsn_says_otherwise() -> None:
    args = postgres.connect_args(StateConf("postgresql", "host=db.example.org", None, "a"))
    assert {k: args[k] for k in postgres.LIVENESS} == postgres.LIVENESS
    assert args["keepalives"] == 1 and args["tcp_user_timeout"] == 5000
    own = postgres.connect_args(
        StateConf("postgresql", "host=db tcp_user_timeout=20000", None, "a")
    )
    assert "tcp_user_timeout" not in own and own["keepalives_idle"] == 5
