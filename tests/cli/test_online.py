"""appliancectl's online verbs find the daemon's control socket (cli/parser.py, conf/paths.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from applianced.cli import main


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
