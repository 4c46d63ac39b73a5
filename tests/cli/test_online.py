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


def test_an_unreadable_config_asks_for_socket(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "appliance.toml"
    config.write_text("[daemon\n")
    assert main(["--config", str(config), "status"]) == 2
    err = capsys.readouterr().err
    assert "cannot find the control socket" in err and "not valid TOML" in err
    assert "pass --socket" in err
