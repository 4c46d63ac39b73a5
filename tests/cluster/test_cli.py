"""appliancectl's cluster side against a real PostgreSQL server (a private cluster,
tests/pg.py): ``check --connect`` connects as the daemon would and names the step that failed;
``cluster forget NODE`` retires a node that is gone, and refuses this one or one alive."""

from __future__ import annotations

import json
import time
from ipaddress import ip_address
from pathlib import Path

import pytest

from applianced.cli import main
from applianced.cli.cluster import FORGET_AFTER, _step
from applianced.cluster import postgres
from applianced.rules.engine import CountedFailure
from tests.pg import PgServer, pg_missing

pytestmark = pytest.mark.skipif(pg_missing() is not None, reason=str(pg_missing()))


def config(tmp_path: Path, dsn: str, password_file: Path, node: str = "alpha") -> Path:
    path = tmp_path / "appliance.toml"
    path.write_text(
        '[[listeners]]\ntransport = "udp"\nport = 5514\n\n[jails.sshd]\nfilter = "sshd"\n\n'
        f'[state]\nbackend = "postgresql"\ndsn = "{dsn}"\npassword_file = "{password_file}"\n'
        f'node = "{node}"\n'
    )
    return path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_check_connects_only_when_asked(
    pg: PgServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = config(tmp_path, f"{pg.dsn} port=1", pg.password_file)  # nothing listens there
    code, out, _ = run(capsys, "check", "--config", str(path))
    assert code == 0 and "database" not in out
    code, _, err = run(capsys, "check", "--connect", "--config", str(path))
    assert code == 3 and ": TCP failed: " in err and "listen_addresses" in err
    code, _, err = run(capsys, "check", "--connect", "--json", "--config", str(path))
    error = json.loads(err)["error"]
    assert code == 3 and (error["code"], error["step"]) == ("database_unreachable", "TCP")

    path = config(tmp_path, pg.dsn, pg.password_file)
    code, out, _ = run(capsys, "check", "--connect", "--config", str(path))
    assert code == 0 and f"database applianced@{pg.socket_dir}:5432/applianced: connected" in out


def test_check_names_a_wrong_password_and_a_schema_too_new(
    pg: PgServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    wrong = tmp_path / "wrong"
    wrong.write_text("not-the-password\n")
    wrong.chmod(0o600)
    code, _, err = run(capsys, "check", "--connect", "--config",
                       str(config(tmp_path, pg.dsn, wrong)))  # fmt: skip
    assert code == 3 and ": authentication failed: " in err and "pg_hba.conf" in err

    with pg.connect() as conn:
        postgres.migrate(conn)
        conn.execute("INSERT INTO applianced_schema VALUES (99)")
    try:
        path = config(tmp_path, pg.dsn, pg.password_file)
        code, _, err = run(capsys, "check", "--connect", "--config", str(path))
        assert code == 1 and "schema version 99 is newer" in err
    finally:
        pg.query("DELETE FROM applianced_schema WHERE version = 99 RETURNING 1")


@pytest.mark.parametrize(
    ("message", "step"),
    [
        ('could not translate host name "db.example.org" to address: Name or service not known',
         "DNS"),
        ("failed to resolve host 'db.example.org': [Errno -3] Temporary failure in name"
         " resolution", "DNS"),
        ('connection to server at "192.0.2.1", port 5432 failed: timeout expired', "TCP"),
        ('connection to server at "192.0.2.1", port 5432 failed: root certificate file '
         '"/root/.postgresql/root.crt" does not exist', "TLS"),
        ('connection to server at "192.0.2.1", port 5432 failed: FATAL: no pg_hba.conf entry for'
         ' host "192.0.2.2", user "applianced", database "applianced", SSL off',
         "authentication"),
    ],
)  # fmt: skip
def test_libpqs_messages_by_step(message: str, step: str) -> None:
    assert _step(message)[0] == step


def test_forget_retires_a_node_that_is_gone_and_refuses_one_alive_or_this_one(
    pg: PgServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = config(tmp_path, pg.dsn, pg.password_file)
    with pg.connect() as conn:
        postgres.migrate(conn)
        postgres.heartbeat(conn, "gone", 0, "1")
        postgres.heartbeat(conn, "alive", 0, "1")
        conn.execute("UPDATE nodes SET last_seen = now() - %s * interval '1 second'"
                     " WHERE name = 'gone'", (FORGET_AFTER + 60,))  # fmt: skip
        failure = CountedFailure("sshd", ip_address("198.51.100.9"), None, "x", time.time(), "s")
        postgres.push_failures(conn, [failure], "gone")

    code, _, err = run(capsys, "cluster", "forget", "alpha", "--config", str(path))
    assert code == 1 and "this appliance" in err
    code, _, err = run(capsys, "cluster", "forget", "nosuch", "--config", str(path))
    assert code == 1 and "no node 'nosuch'" in err and "alive" in err and "gone" in err
    code, _, err = run(capsys, "cluster", "forget", "alive", "--config", str(path))
    assert code == 1 and "stop it first (or pass --force)" in err

    code, out, _ = run(capsys, "cluster", "forget", "gone", "--config", str(path))
    assert code == 0 and "forgot node gone" in out and "1 shared failures" in out
    assert pg.query("SELECT count(*) FROM failures WHERE node = 'gone'") == [(0,)]
    code, out, _ = run(capsys, "cluster", "forget", "alive", "--force", "--config", str(path))
    assert code == 0
    assert pg.query("SELECT name FROM nodes WHERE name IN ('gone', 'alive')") == []


def test_check_connect_outside_a_cluster_says_there_is_nothing_to_connect_to(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from applianced.conf.load import DEFAULT_CONFIG

    code, out, _ = run(capsys, "check", "--connect", "--config", str(DEFAULT_CONFIG))
    assert code == 0 and 'no database to connect to: [state] backend is "sqlite"' in out
