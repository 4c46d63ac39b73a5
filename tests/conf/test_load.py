"""The config loader: TOML into frozen Config, and errors an operator can act on."""

from __future__ import annotations

import subprocess
import sys
from ipaddress import ip_network
from pathlib import Path

import pytest

from applianced.conf.load import DEFAULT_CONFIG, load_config, parse_config
from applianced.errors import ConfigError, ConfigErrors

ROOT = Path(__file__).resolve().parents[2]

MINIMAL = """\
[[listeners]]
transport = "udp"
port = 5514

[jails.sshd]
filter = "sshd"
"""


def load(text: str, tmp_path: Path) -> object:
    path = tmp_path / "appliance.toml"
    path.write_text(text)
    return load_config(path)


def error_of(text: str, tmp_path: Path) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load(text, tmp_path)
    return info.value


def test_shipped_default_config_is_valid() -> None:
    """The shipped config (`./dev run` copies it) loads and enables the three core jails."""
    config = load_config(DEFAULT_CONFIG)
    assert [j.name for j in config.enabled_jails] == ["postfix-sasl", "dovecot", "sshd"]
    assert {(c.transport, c.address, c.port) for c in config.listeners} == {
        ("udp", "127.0.0.1", 5514),
        ("tcp", "127.0.0.1", 5514),
    }
    assert all(j.failregex and j.programs for j in config.jails)


def test_production_example_is_valid() -> None:
    """The documented production example listens on 0.0.0.0:514 and is the gateway shape."""
    config = load_config(ROOT / "examples" / "appliance.production.toml")
    assert {(c.address, c.port) for c in config.listeners} == {("0.0.0.0", 514)}
    assert {j.hook for j in config.enabled_jails} == {"forward"}
    assert config.jail("postfix-sasl") is not None
    assert config.jail("postfix-sasl").senders == (ip_network("192.0.2.10/32"),)  # type: ignore[union-attr]


def test_defaults_apply_and_jails_override(tmp_path: Path) -> None:
    """A jail takes [defaults] unless it sets a key; ignoreip lists are merged."""
    config = parse_config(
        MINIMAL
        + """
[defaults]
bantime = "1h"
maxretry = 7
ignoreip = ["192.0.2.0/24"]

[jails.other]
failregex = ['^bad <HOST>$']
maxretry = 2
ignoreip = ["198.51.100.1"]
bantime_increment = { factor = 3 }
""",
        tmp_path / "x.toml",
    )
    sshd, other = config.jails
    assert (sshd.bantime, sshd.maxretry) == (3600.0, 7)
    assert (other.bantime, other.maxretry) == (3600.0, 2)
    assert other.ignoreip == (ip_network("192.0.2.0/24"), ip_network("198.51.100.1/32"))
    assert other.bantime_increment.factor == 3.0
    assert other.bantime_increment.enabled is True
    assert other.programs == ()
    assert sshd.programs == ("sshd",)


def test_unknown_key_in_a_jail_names_file_line_and_allowed_keys(tmp_path: Path) -> None:
    """A typo must not silently disable a jail: it is an error with its line."""
    e = error_of(MINIMAL + "maxretyr = 3\n", tmp_path)
    assert e.line == 7
    assert e.key == "jails.sshd.maxretyr"
    assert "maxretry" in str(e) and "appliance.toml:7" in str(e)


def test_unknown_section_is_an_error(tmp_path: Path) -> None:
    """A misspelt section is refused."""
    e = error_of(MINIMAL + "[jail.sshd]\nenabled = true\n", tmp_path)
    assert "unknown section 'jail'" in str(e)
    assert e.line == 7


def test_bad_duration_points_at_its_line_in_defaults(tmp_path: Path) -> None:
    """A jail that inherits a bad value from [defaults] is reported at [defaults]."""
    e = error_of(MINIMAL + '\n[defaults]\nbantime = "ten minutes"\n', tmp_path)
    assert e.key == "defaults.bantime"
    assert e.line == 9
    assert "10m" in str(e)


def test_bad_cidr_is_reported(tmp_path: Path) -> None:
    """Networks are validated."""
    e = error_of(MINIMAL + 'senders = ["192.0.2.300/24"]\n', tmp_path)
    assert e.key == "jails.sshd.senders" and e.line == 7


def test_toml_syntax_error_has_a_line(tmp_path: Path) -> None:
    """tomllib's own position is kept."""
    e = error_of(MINIMAL + "bantime = \n", tmp_path)
    assert e.line == 7


def test_missing_file_says_how_to_point_elsewhere(tmp_path: Path) -> None:
    """The error names the path and the flag."""
    with pytest.raises(ConfigError, match="--config"):
        load_config(tmp_path / "nope.toml")


def test_relative_paths_are_relative_to_the_config_file(tmp_path: Path) -> None:
    """state_dir = "state" in /x/appliance.toml means /x/state."""
    config = parse_config('[daemon]\nstate_dir = "state"\n' + MINIMAL, tmp_path / "a.toml")
    assert config.state_dir == tmp_path / "state"


def test_ipv4_mapped_addresses_in_the_config_are_their_ipv4_addresses(tmp_path: Path) -> None:
    """``::ffff:198.51.100.201`` in ignoreip must protect 198.51.100.201, which is how the
    jails see it; likewise senders and allowed_senders."""
    config = parse_config(
        """\
[receiver]
allowed_senders = ["::ffff:192.0.2.1"]

[[listeners]]
port = 5514

[jails.sshd]
filter = "sshd"
ignoreip = ["::ffff:198.51.100.201", "::ffff:198.51.100.0/120"]
senders = ["::ffff:192.0.2.2/128"]
""",
        tmp_path / "a.toml",
    )
    assert config.listeners[0].allowed_senders == (ip_network("192.0.2.1/32"),)
    jail = config.jails[0]
    assert jail.ignoreip == (ip_network("198.51.100.201/32"), ip_network("198.51.100.0/24"))
    assert jail.senders == (ip_network("192.0.2.2/32"),)


def test_the_loader_imports_no_twisted() -> None:
    """Loading and checking a config (TLS files included) needs no Twisted, so the offline
    `appliancectl check` does not pay for importing it (a fresh interpreter tells)."""
    code = (
        "import sys\n"
        "from applianced.conf.load import DEFAULT_CONFIG, load_config\n"
        "load_config(DEFAULT_CONFIG)\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'twisted', 'sqlite3'}))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "[]"


def test_log_level_and_log_found(tmp_path: Path) -> None:
    """`[daemon] log_level` (info by default) and `log_found` from [defaults] or a jail."""
    config = parse_config(MINIMAL, tmp_path / "appliance.toml")
    assert config.log_level == "info"
    assert not config.jails[0].log_found
    text = (
        '[daemon]\nlog_level = "warning"\n\n'
        + MINIMAL
        + '\n[jails.dovecot]\nfilter = "dovecot"\nlog_found = false\n'
        + "\n[defaults]\nlog_found = true\n"
    )
    config = parse_config(text, tmp_path / "appliance.toml")
    assert config.log_level == "warning"
    assert [j.log_found for j in config.jails] == [True, False]


def test_a_bad_log_level_or_log_found_names_its_line(tmp_path: Path) -> None:
    e = error_of('[daemon]\nlog_level = "verbose"\n' + MINIMAL, tmp_path)
    assert e.key == "daemon.log_level" and e.line == 2
    assert "'debug', 'info', 'warning', 'error'" in str(e)
    e = error_of(MINIMAL + 'log_found = "yes"\n', tmp_path)
    assert e.key == "jails.sshd.log_found" and "true or false" in str(e)


def test_every_mistake_is_reported_with_its_line_in_the_files_order(tmp_path: Path) -> None:
    """One mistake per table, and two in one jail: each is reported once with its line and
    key, its message as when alone; a [defaults] mistake once, not once per jail."""
    text = """\
[daemon]
lines_per_ban = -1

[[listeners]]
transport = "udp"
port = 70000

[defaults]
maxretry = "3"

[jails.sshd]
filter = "sshd"
bantime = "forever"
hook = "output"

[jails.dovecot]
filter = "dovecot"

[metrics]
port = 0
"""
    error = error_of(text, tmp_path)
    assert isinstance(error, ConfigErrors)
    path = tmp_path / "appliance.toml"
    assert [(e.line, e.key) for e in error.errors] == [
        (2, "daemon.lines_per_ban"),
        (6, "listeners[0].port"),
        (9, "defaults.maxretry"),
        (13, "jails.sshd.bantime"),
        (14, "jails.sshd.hook"),
        (20, "metrics.port"),
    ]
    assert str(error).splitlines()[2] == (
        f"{path}:9: [defaults.maxretry] must be a whole number, not '3'"
    )
    alone = error_of(MINIMAL + 'hook = "output"\n', tmp_path)
    assert type(alone) is ConfigError and alone.line == 7 and alone.key == "jails.sshd.hook"


def test_reconcile_interval_is_read_from_enforcement(tmp_path: Path) -> None:
    """`[enforcement] reconcile_interval`: 60 s by default, a duration, 0 turns it off."""
    path = tmp_path / "appliance.toml"
    assert parse_config(MINIMAL, path).enforcement.reconcile_interval == 60
    for written, seconds in (("'5m'", 300), ("0", 0)):
        text = f"[enforcement]\nreconcile_interval = {written}\n\n" + MINIMAL
        assert parse_config(text, path).enforcement.reconcile_interval == seconds
    e = error_of("[enforcement]\nreconcile_interval = 'often'\n\n" + MINIMAL, tmp_path)
    assert e.key == "enforcement.reconcile_interval" and e.line == 2
