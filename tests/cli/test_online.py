"""appliancectl's online verbs find the daemon's control socket (cli/parser.py, conf/paths.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.task import Clock

from applianced import views
from applianced.appliance import Appliance
from applianced.cli import main
from applianced.testing import MemoryEnforcer, MemoryStore
from tests.helpers import config, jail_conf


def test_status_finds_the_socket_in_a_config_the_loader_refuses(
    control_socket: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The daemon still runs the config it loaded before the file was broken: status reaches
    it, and `check` is what says what is wrong with the file."""
    config = tmp_path / "appliance.toml"
    config.write_text(
        f'[daemon]\ncontrol_socket = "{control_socket}"\n[jails.sshd]\nmaxretry = "x"\n'
    )
    assert main(["--config", str(config), "status", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"jails": {}}
    assert json.loads((tmp_path / "request.json").read_text())["verb"] == "status"
    assert main(["check", "--config", str(config)]) == 2
    assert str(config) in capsys.readouterr().err


def test_an_unreadable_config_falls_back_to_the_default_socket(
    control_socket: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A file that is not TOML names no socket: the default one is asked."""
    monkeypatch.setattr("applianced.cli.parser.DEFAULT_CONTROL_SOCKET", str(control_socket))
    config = tmp_path / "appliance.toml"
    config.write_text("[daemon\n")
    assert main(["--config", str(config), "status", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"jails": {}}


def test_nothing_on_the_default_socket_says_why_it_was_tried(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("applianced.cli.parser.DEFAULT_CONTROL_SOCKET", str(tmp_path / "no.sock"))
    config = tmp_path / "appliance.toml"
    config.write_text("[daemon\n")
    assert main(["--config", str(config), "status"]) == 3
    err = capsys.readouterr().err
    assert "applianced is not running" in err and "not valid TOML" in err
    assert "the default one was tried; pass --socket" in err


def appliance(tmp_path: Path, cluster: bool = False) -> tuple[Appliance, Clock]:
    clock = Clock()
    clock.advance(1_800_000_000)
    conf = config(tmp_path, jail_conf(), jail_conf("postfix", programs=("postfix/smtpd",)))
    cluster_status = (lambda: {}) if cluster else None
    app = Appliance(conf, MemoryStore(), MemoryEnforcer(), clock, cluster=cluster_status)
    app.start()
    return app, clock


def run(capsys: pytest.CaptureFixture[str], answer: dict[str, Any], result: Any, *argv: str) -> str:
    """appliancectl's human output for a daemon answering ``result`` (JSON's round trip)."""
    answer["result"] = json.loads(json.dumps(result))
    assert main([*argv]) == 0
    return capsys.readouterr().out


def test_status_of_a_jail_lists_its_bans(
    control_socket: Path,
    answer: dict[str, Any],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    app, clock = appliance(tmp_path)
    for i in range(views.STATUS_BANS + 1):
        views.ban(app, "sshd", f"198.51.100.{i}")
        clock.advance(1)
    status = views.status(app, "sshd")
    out = run(capsys, answer, status, "--socket", str(control_socket), "status", "sshd")
    assert f"active bans of sshd: {views.STATUS_BANS + 1}, the newest 50 shown" in out
    assert "198.51.100.50/32" in out and "198.51.100.0/32" not in out
    assert json.loads((tmp_path / "request.json").read_text())["args"] == {"jail": "sshd"}


def test_status_of_a_jail_without_bans(
    control_socket: Path,
    answer: dict[str, Any],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    app, _ = appliance(tmp_path)
    out = run(
        capsys,
        answer,
        views.status(app, "postfix"),
        "--socket",
        str(control_socket),
        "status",
        "postfix",
    )
    assert "active bans of postfix: none" in out


@pytest.mark.parametrize("cluster", [False, True])
def test_why_names_the_deciding_node_only_in_cluster_mode(
    control_socket: Path,
    answer: dict[str, Any],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    cluster: bool,
) -> None:
    app, _ = appliance(tmp_path, cluster)
    views.ban(app, "sshd", "203.0.113.50")
    why = views.why(app, "203.0.113.50/32")
    why["history"][0]["node"] = "vm"
    out = run(capsys, answer, why, "--socket", str(control_socket), "why", "203.0.113.50/32")
    assert ("decided by node vm" in out) is cluster
    assert "0 bans within findtime_history" in out


@pytest.mark.parametrize(
    ("n", "text"), [(0, "lifted 0 bans"), (1, "lifted 1 ban\n"), (2, "lifted 2 bans")]
)
def test_plurals(
    control_socket: Path,
    answer: dict[str, Any],
    capsys: pytest.CaptureFixture[str],
    n: int,
    text: str,
) -> None:
    out = run(capsys, answer, [{}] * n, "--socket", str(control_socket), "flush")
    assert text in out


def test_status_shows_each_jail_s_unmatched_messages_per_program(
    control_socket: Path,
    answer: dict[str, Any],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """status --json gives the per-program counts; the table their total and, for a jail of
    several programs, each one's."""
    app, _ = appliance(tmp_path)
    app.engine.jails["sshd"].stats.unmatched.update({"sshd": 3, "sshd-session": 1})
    status = views.status(app)
    assert status["jails"]["sshd"]["unmatched"] == {"sshd": 3, "sshd-session": 1}
    assert status["jails"]["postfix"]["unmatched"] == {}
    out = run(capsys, answer, status, "--socket", str(control_socket), "status")
    assert "4 (sshd 3, sshd-session 1)" in out


def test_explain_asks_the_running_daemon_and_prints_its_walk(
    control_socket: Path,
    answer: dict[str, Any],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    app, _ = appliance(tmp_path)
    line = "Nov 22 10:00:01 mx sshd[1]: Failed password for root from 203.0.113.7 port 22 ssh2"
    result = views.explain(app, line)
    out = run(capsys, answer, result, "--socket", str(control_socket), "explain", line)
    assert json.loads((tmp_path / "request.json").read_text()) == {
        "verb": "explain",
        "args": {"frame": line},
    }
    assert "jail sshd: failure" in out and "jail postfix: unread" in out
    assert "=> a failure for sshd" in out


def test_status_shows_the_stream_s_pulls_and_refusals_in_their_number(
    control_socket: Path,
    answer: dict[str, Any],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """One pull is '1 bouncer pull' (it read '1 bouncer pulls'), and the connections and
    request bodies refused at the server's limits are shown (they were only a metric)."""
    app, _ = appliance(tmp_path)
    app.health.bouncer_pulls = 1
    app.health.bouncer_connections_refused = 2
    out = run(capsys, answer, views.status(app), "--socket", str(control_socket), "status")
    assert (
        "decision stream: 1 bouncer pull answered, 0 refused (a missing or wrong key; "
        "`appliancectl bouncer list`)\ndecision stream limits: 2 connections or requests "
        "refused (connections over its caps, request bodies)\n"
    ) in out
