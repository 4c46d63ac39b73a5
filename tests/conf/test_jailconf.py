"""A config's jails (conf/jailconf.py), read through the loader."""

from __future__ import annotations

from pathlib import Path

import pytest

from applianced.conf.load import parse_config
from tests.conf.test_load import MINIMAL, error_of


def test_bad_regex_is_reported_with_the_jail_and_line(tmp_path: Path) -> None:
    """An inline failregex that does not compile fails the load, not the daemon later."""
    e = error_of(MINIMAL + "[jails.x]\nfailregex = ['^(unclosed <HOST>']\n", tmp_path)
    assert e.key == "jails.x.failregex" and e.line == 8


def test_regex_without_host_is_refused(tmp_path: Path) -> None:
    """A failregex must say where the address is."""
    e = error_of(MINIMAL + "[jails.x]\nfailregex = ['^no host here']\n", tmp_path)
    assert "HOST" in str(e)


def test_unknown_filter_lists_the_shipped_ones(tmp_path: Path) -> None:
    """filter names a shipped filter; a wrong name says which exist."""
    e = error_of(MINIMAL.replace('"sshd"', '"sshdd"'), tmp_path)
    assert "sshd" in str(e) and "dovecot" in str(e) and e.line == 6


def test_jail_needs_a_filter_or_failregex(tmp_path: Path) -> None:
    """A jail with nothing to match is an error."""
    e = error_of(MINIMAL + "[jails.empty]\nmaxretry = 3\n", tmp_path)
    assert "filter" in str(e) and e.line == 7


@pytest.mark.parametrize(
    ("ports", "expected"),
    [("[25, 465]", ("25", "465")), ('["1000-2000"]', ("1000-2000",)), ('["all"]', ("all",))],
)
def test_ports(tmp_path: Path, ports: str, expected: tuple[str, ...]) -> None:
    """Ports are numbers, ranges or 'all'."""
    config = parse_config(MINIMAL + f"ports = {ports}\n", tmp_path / "a.toml")
    assert config.jails[0].ports == expected


@pytest.mark.parametrize("ports", ["[]", "[0]", '["25-20"]', '["all", 25]', '["smtp"]'])
def test_bad_ports(tmp_path: Path, ports: str) -> None:
    """Bad port lists are refused with the jail's line."""
    e = error_of(MINIMAL + f"ports = {ports}\n", tmp_path)
    assert e.key == "jails.sshd.ports" and e.line == 7


def test_jail_names_must_fit_nftables(tmp_path: Path) -> None:
    """Jail names become nftables set names: letters, digits, - and _."""
    e = error_of(MINIMAL + "[jails.'bad name!']\nfilter = 'sshd'\n", tmp_path)
    assert "letters, digits" in str(e)


@pytest.mark.parametrize(
    ("setting", "key"),
    [
        ('bantime = "166w"', "bantime"),
        ("bantime = 100000000", "bantime"),
        ('[jails.sshd.bantime_increment]\nmaxtime = "200w"', "maxtime"),
        ('bantime_jitter = "166w"', "bantime_jitter"),
    ],
)
def test_a_ban_longer_than_the_kernel_takes_is_refused(
    tmp_path: Path, setting: str, key: str
) -> None:
    """nftables refuses an element timeout above 99,999,999 s: `check` says so, with the
    limit and how to ask for a permanent ban instead."""
    e = error_of(MINIMAL + setting + "\n", tmp_path)
    assert key in e.key and e.line == MINIMAL.count("\n") + setting.count("\n") + 1
    assert "99,999,999 s" in str(e) and "max_count" in str(e)


def test_the_longest_ban_the_kernel_takes_is_accepted(tmp_path: Path) -> None:
    config = parse_config(MINIMAL + "bantime = 99999999\n", tmp_path / "a.toml")
    assert config.jails[0].bantime == 99_999_999


@pytest.mark.parametrize(
    "setting",
    [
        "bantime = inf",
        "bantime = nan",
        "findtime = inf",
        "bantime = -1",
        "findtime_history = nan",
        "[jails.sshd.bantime_increment]\nfactor = nan",
        "[jails.sshd.bantime_increment]\nfactor = inf",
        'bantime = "9999999999999999999999999999999999999999999999999999999999999999999999'
        "9999999999999999999999999999999999999999999999999999999999999999999999999999999999"
        "9999999999999999999999999999999999999999999999999999999999999999999999999999999999"
        "9999999999999999999999999999999999999999999999999999999999999999999999999999999999"
        '9999999999999999999999999999999999999999"',
    ],
)
def test_durations_and_factors_are_finite_numbers(tmp_path: Path, setting: str) -> None:
    e = error_of(MINIMAL + setting + "\n", tmp_path)
    assert e.line == MINIMAL.count("\n") + setting.count("\n") + 1, str(e)


@pytest.mark.parametrize(
    ("extra", "usedns", "use_dns"),
    [
        ("", "warn", True),  # fail2ban's default
        ('usedns = "yes"\n', "yes", True),
        ('usedns = "warn"\n', "warn", True),
        ('usedns = "no"\n', "no", False),
        ("use_dns = true\n", "yes", True),  # the older key still works
        ("use_dns = false\n", "no", False),
    ],
)
def test_usedns_takes_fail2bans_values(
    tmp_path: Path, extra: str, usedns: str, use_dns: bool
) -> None:
    jail = parse_config(MINIMAL + extra, tmp_path / "a.toml").jails[0]
    assert (jail.usedns, jail.use_dns) == (usedns, use_dns)


def test_usedns_in_defaults_is_inherited_and_the_jail_wins(tmp_path: Path) -> None:
    text = MINIMAL.replace("[jails.sshd]", '[defaults]\nusedns = "warn"\n\n[jails.sshd]')
    assert parse_config(text, tmp_path / "a.toml").jails[0].usedns == "warn"
    jail = parse_config(text + "use_dns = false\n", tmp_path / "a.toml").jails[0]
    assert jail.usedns == "no"


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        ('usedns = "raw"\n', "cannot hold"),
        ('usedns = "maybe"\n', "usedns"),
        ('usedns = "yes"\nuse_dns = true\n', "not both"),
    ],
)
def test_usedns_errors_say_what_to_do(tmp_path: Path, extra: str, words: str) -> None:
    e = error_of(MINIMAL + extra, tmp_path)
    assert words in str(e) and "usedns" in e.key
