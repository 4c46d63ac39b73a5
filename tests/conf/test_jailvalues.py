"""conf/jailvalues.py: what `jail get` shows, each option with where its value comes from,
read from a file the loader may refuse."""

from __future__ import annotations

from pathlib import Path

import pytest

from applianced.conf.jailkeys import JAIL_OPTIONS
from applianced.conf.jailvalues import JailValue, NoSuchJailError, jail_values
from applianced.errors import ConfigError

TEXT = """\
[defaults]
maxretry = "3"        # the loader refuses this; jail get still reads the file
bantime = "1h"
filter = "sshd"       # not a [defaults] key: never a jail's

[defaults.bantime_increment]
factor = 3.0

[jails.sshd]
filter = "sshd"
bantime = "2h"
bantime_increment.maxtime = "2w"
"""


@pytest.fixture
def path(tmp_path: Path) -> Path:
    p = tmp_path / "appliance.toml"
    p.write_text(TEXT)
    return p


def test_each_option_comes_from_the_jail_then_defaults_then_built_in(path: Path) -> None:
    values = jail_values(path, "sshd")
    assert list(values) == list(JAIL_OPTIONS)
    assert values["bantime"] == JailValue("2h", "jails.sshd")
    assert values["maxretry"] == JailValue("3", "defaults")
    assert values["hook"] == JailValue("input", "built-in")
    assert values["enabled"] == JailValue(True, "built-in")
    assert values["bantime_increment.maxtime"] == JailValue("2w", "jails.sshd")
    assert values["bantime_increment.factor"] == JailValue(3.0, "defaults")
    assert values["bantime_increment.enabled"] == JailValue(True, "built-in")
    assert values["filter"] == JailValue("sshd", "jails.sshd")
    assert values["failregex"] == JailValue(None, "unset")


def test_an_unknown_jail_or_an_unreadable_file_is_refused(path: Path, tmp_path: Path) -> None:
    with pytest.raises(NoSuchJailError, match=r"no jail 'dovecot' in .* \(jails: sshd\)"):
        jail_values(path, "dovecot")
    bad = tmp_path / "bad.toml"
    bad.write_text("[jails\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        jail_values(bad, "sshd")
