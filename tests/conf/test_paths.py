"""conf/paths.py: the config file's path and the control socket a config names, read without
the loader."""

from __future__ import annotations

from pathlib import Path

import pytest

from applianced.conf.load import load_config
from applianced.conf.paths import DEFAULT_CONFIG, config_path, control_socket
from applianced.errors import ConfigError


def test_config_path_prefers_the_option_then_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("APPLIANCED_CONFIG", str(tmp_path / "env.toml"))
    assert config_path(tmp_path / "given.toml") == tmp_path / "given.toml"
    assert config_path(None) == tmp_path / "env.toml"
    monkeypatch.delenv("APPLIANCED_CONFIG")
    etc = Path("/etc/applianced/appliance.toml")
    assert config_path(None) == (etc if etc.exists() else DEFAULT_CONFIG)


def test_control_socket_is_the_one_the_loader_reads(tmp_path: Path) -> None:
    """Relative to the config's directory, the default when unset: as load_config has it."""
    assert control_socket(DEFAULT_CONFIG) == load_config(DEFAULT_CONFIG).control_socket
    config = tmp_path / "appliance.toml"
    config.write_text('[daemon]\ncontrol_socket = "run/ctl.sock"\n')
    assert control_socket(config) == (tmp_path / "run" / "ctl.sock").resolve()
    config.write_text("[receiver]\n")
    assert control_socket(config) == Path("/run/applianced/control.sock")


def test_control_socket_of_a_config_the_loader_refuses(tmp_path: Path) -> None:
    """A daemon still runs the config it loaded: its socket is found in the edited file."""
    config = tmp_path / "appliance.toml"
    config.write_text('[daemon]\ncontrol_socket = "/run/x.sock"\n[jails.sshd]\nmaxretry = "x"\n')
    with pytest.raises(ConfigError):
        load_config(config)
    assert control_socket(config) == Path("/run/x.sock")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[daemon\n", "not valid TOML"),
        ("daemon = 1\n", r"\[daemon\] must be a table"),
        ("[daemon]\ncontrol_socket = 3\n", r"\[daemon.control_socket\] must be a path, not 3"),
    ],
)
def test_control_socket_refuses_what_it_cannot_read(
    tmp_path: Path, text: str, message: str
) -> None:
    config = tmp_path / "appliance.toml"
    config.write_text(text)
    with pytest.raises(ConfigError, match=message):
        control_socket(config)
    with pytest.raises(ConfigError, match="file not found"):
        control_socket(tmp_path / "none.toml")
