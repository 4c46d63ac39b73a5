"""appliancectl starts light: ``--help``, the online verbs and the offline verbs import neither
Twisted nor the daemon's modules (the service, the appliance, the control server, the listeners,
enforcement, the cluster; the cluster verbs load only ``cluster/postgres.py``, psycopg and
SQL). Each case runs in a fresh interpreter, whose ``sys.modules`` is the
proof; the timing itself is ``python -m bench --only cli``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from applianced.conf.load import DEFAULT_CONFIG

DAEMON = (
    "twisted",
    "applianced.service",
    "applianced.appliance",
    "applianced.control",
    "applianced.receiver.listeners",
    "applianced.receiver.tls",
    "applianced.enforcement",
    "applianced.cluster",
    "applianced.metrics",
)

# Runs ``main(argv)``, then prints the loaded modules of DAEMON's families as a JSON list.
_PROBE = """
import json, sys
from applianced.cli import main
try:
    main(json.loads(sys.argv[1]))
except SystemExit:
    pass
families = json.loads(sys.argv[2])
loaded = sorted(m for m in sys.modules if any(m == f or m.startswith(f + ".") for f in families))
print(json.dumps(loaded), file=sys.stderr)
"""


def loaded_daemon_modules(*argv: str, stdin: bytes = b"") -> list[str]:
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, json.dumps(argv), json.dumps(DAEMON)],
        input=stdin,
        capture_output=True,
        timeout=60,
        check=True,
    )
    modules: list[str] = json.loads(done.stderr.decode().splitlines()[-1])
    return modules


def test_the_probe_sees_twisted_when_it_is_loaded() -> None:
    """The check can fail: a verb that loads the daemon's code is seen."""
    done = subprocess.run(
        [sys.executable, "-c", "import applianced.service; " + _PROBE, '["--help"]', '["twisted"]'],
        capture_output=True,
        timeout=60,
        check=True,
    )
    assert "twisted" in json.loads(done.stderr.decode().splitlines()[-1])


def test_help_imports_no_daemon_code() -> None:
    assert loaded_daemon_modules("--help") == []


def test_status_imports_no_daemon_code(control_socket: Path) -> None:
    assert loaded_daemon_modules("--socket", str(control_socket), "status", "--json") == []


def test_status_through_the_config_imports_no_daemon_code(tmp_path: Path) -> None:
    """Finding the socket reads the config (the shipped one here); the daemon is down."""
    assert loaded_daemon_modules("status") == []


@pytest.mark.parametrize(
    "argv",
    [
        ("check",),
        ("test-filter", "sshd", "-"),
        ("parse", "--json"),
        ("explain", "--config", str(DEFAULT_CONFIG)),
        ("jail", "set", "sshd", "maxretry", "not-a-number"),
        ("import-fail2ban", str(Path(__file__).parents[1] / "data" / "f2b-trees" / "qmail")),
    ],
    ids=lambda argv: argv[0],
)
def test_offline_verbs_import_no_daemon_code(argv: tuple[str, ...]) -> None:
    line = b"<38>Nov 22 10:00:01 mx sshd[1]: Invalid user x from 203.0.113.7 port 22\n"
    assert loaded_daemon_modules(*argv, stdin=line) == []


def test_the_cluster_verbs_load_the_schema_module_only() -> None:
    """``cluster forget`` (here refused: the shipped config is not in a cluster) reads the
    daemon's connection options and queries, and nothing else of it."""
    assert loaded_daemon_modules("cluster", "forget", "mx-old") == [
        "applianced.cluster",
        "applianced.cluster.postgres",
    ]


def test_explain_against_the_daemon_imports_no_daemon_code(
    control_socket: Path, answer: dict[str, Any]
) -> None:
    answer["result"] = {"shape": "RFC 5424", "message": {"msg": "x"}, "jails": [], "summary": ""}
    assert loaded_daemon_modules("--socket", str(control_socket), "explain", "x") == []
