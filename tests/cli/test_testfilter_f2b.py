"""appliancectl test-filter with Debian's fail2ban filters (issue 21), on our own annotated
lines: what it prints is what the daemon bans (the same line through ``Engine.feed`` gives
the same address), lines without a host name field or a pid as ``__prefix_line`` takes
them, host names printed as fail2ban-regex prints them, multi-line filters per file."""

# ruff: noqa: E501  (log lines are data and stay whole)
from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from applianced.cli import main
from applianced.conf.load import parse_config
from applianced.receiver.parse import parse
from applianced.rules.engine import Engine
from applianced.rules.jail import Jail, jail_filter
from tests.debian_fail2ban import FetchError, debian_filter_d

# (filter, log line, host test-filter prints or None for no failure, syslog line the daemon gets
# for the same event or None when it has no syslog form)
CASES = [
    # dovecot's own log file: no host name field; the daemon gets it from syslog as "dovecot".
    (
        "dovecot",
        "Jan 29 09:33:58 pop3-login: Info: Aborted login (auth failed, 1 attempts in 2 secs): user=<grace>, method=PLAIN, rip=192.0.2.3, lip=192.0.2.1",
        "192.0.2.3",
        "<38>Jan 29 09:33:58 mx dovecot: pop3-login: Info: Aborted login (auth failed, 1 attempts in 2 secs): user=<grace>, method=PLAIN, rip=192.0.2.3, lip=192.0.2.1",
    ),
    (
        "dovecot",
        "Jan 29 13:54:06 auth-worker(22401): Info: sql(admin@example.de,192.0.2.5,<n4JLdHNVngZGpV2j>): unknown user",
        "192.0.2.5",
        "<38>Jan 29 13:54:06 mx dovecot: auth-worker(22401): Info: sql(admin@example.de,192.0.2.5,<n4JLdHNVngZGpV2j>): unknown user",
    ),
    (
        "dovecot",
        "Jan 29 09:34:00 pop3-login: Info: Login: user=<grace>, method=PLAIN, rip=192.0.2.3",
        None,
        None,
    ),
    # sshd without a host name field, without a pid.
    (
        "sshd",
        "Mar  3 00:17:22 [sshd]: User root from 198.51.100.8 not allowed because not listed in AllowUsers",
        "198.51.100.8",
        None,
    ),
    (
        "sshd",
        "Nov 23 21:50:37 sshd: Invalid user ftp from 198.51.100.9",
        "198.51.100.9",
        "<38>Nov 23 21:50:37 host sshd: Invalid user ftp from 198.51.100.9",
    ),
    # An IPv4-mapped address is printed as the IPv4 address the daemon bans.
    (
        "sshd",
        "Jan  5 01:31:41 www sshd[1643]: ROOT LOGIN REFUSED FROM ::ffff:203.0.113.4",
        "203.0.113.4",
        "<38>Jan  5 01:31:41 www sshd[1643]: ROOT LOGIN REFUSED FROM ::ffff:203.0.113.4",
    ),
    # A host name is printed as the name, as fail2ban's sample annotations give it (usedns
    # decides what the daemon does with it).
    (
        "sshd",
        "Feb 25 14:34:11 belka sshd[31607]: User root from mx.example.com not allowed because not listed in AllowUsers",
        "mx.example.com",
        None,
    ),
    # sendmail's address literals, both forms. Every host here is fail2ban-regex 1.0.2's
    # answer for the line (the name excepted: it resolves names, and this sandbox has no DNS).
    (
        "sendmail-auth",
        "Nov 22 10:00:01 mx sendmail[1]: AUTH failure (LOGIN): authentication failure (-13) SASL(-13): authentication failure: checkpass failed, user=x, relay=[192.0.2.12]",
        "192.0.2.12",
        None,
    ),
    (
        "sendmail-auth",
        "Nov 22 10:00:02 mx sm-mta[5]: s1000000000001: [IPv6:2001:db8::12]: possible SMTP attack: command=AUTH, count=5",
        "2001:db8::12",
        "<38>Nov 22 10:00:02 mx sm-mta[5]: s1000000000001: [IPv6:2001:db8::12]: possible SMTP attack: command=AUTH, count=5",
    ),
    (
        "sendmail-auth",
        "Nov 22 10:00:03 mx sm-mta[5]: s1000000000002: mx.example [192.0.2.13]: possible SMTP attack: command=AUTH, count=5",
        "192.0.2.13",
        "<38>Nov 22 10:00:03 mx sm-mta[5]: s1000000000002: mx.example [192.0.2.13]: possible SMTP attack: command=AUTH, count=5",
    ),
    # courier-smtp: the address is in prefregex.
    (
        "courier-smtp",
        "Nov 22 10:00:04 mx courieresmtpd: error,relay=::ffff:192.0.2.14,from=<a@example.com>,to=<b@example.com>: 550 User unknown.",
        "192.0.2.14",
        "<38>Nov 22 10:00:04 mx courieresmtpd: error,relay=::ffff:192.0.2.14,from=<a@example.com>,to=<b@example.com>: 550 User unknown.",
    ),
]


@pytest.fixture(scope="module")
def filter_d() -> Path:
    try:
        return debian_filter_d()
    except FetchError as e:
        pytest.skip(str(e))


@pytest.mark.parametrize(("name", "line", "host", "syslog"), CASES)
def test_test_filter_and_the_daemon_agree(
    filter_d: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    name: str,
    line: str,
    host: str | None,
    syslog: str | None,
) -> None:
    log = tmp_path / "a.log"
    log.write_text(line + "\n")
    conf = filter_d / f"{name}.conf"
    main(["--config", str(tmp_path / "none.toml"), "test-filter", str(conf), str(log), "--json"])
    rows = _failures(capsys.readouterr().out)
    assert [r["host"] for r in rows] == ([host] if host else [])
    if syslog is None:
        return
    config = parse_config(
        f'[[listeners]]\ntransport = "udp"\nport = 5514\n\n[jails.j]\nfilter = "{conf}"\nmaxretry = 1\n',
        tmp_path / "a.toml",
    )
    (jail_conf,) = config.jails
    engine = Engine([Jail(jail_conf, jail_filter(jail_conf))])
    message = parse(syslog.encode(), datetime(2026, 11, 22, tzinfo=UTC))
    offences = engine.feed(message, 1000.0)
    assert [str(o.address) for o in offences] == ([host] if host else [])


def test_multi_line_filters_keep_their_state_per_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A fail2ban filter of our own with <F-MLFID>: the address of one line, the failure of a
    later line of the same connection; another connection's failure has no address."""
    conf = tmp_path / "conn.conf"
    conf.write_text(
        "[Definition]\n"
        "prefregex = ^\\s*\\S+ demo\\[<F-MLFID>\\d+</F-MLFID>\\]: <F-CONTENT>.+</F-CONTENT>$\n"
        "failregex = ^<F-NOFAIL>connect from</F-NOFAIL> <HOST>$\n"
        "            ^too many failures for <F-USER>\\S+</F-USER>$\n"
    )
    log = tmp_path / "a.log"
    log.write_text(
        "Nov 22 10:00:01 mx demo[1]: connect from 192.0.2.20\n"
        "Nov 22 10:00:02 mx demo[2]: too many failures for bob\n"
        "Nov 22 10:00:03 mx demo[1]: too many failures for alice\n"
    )
    main(["--config", str(tmp_path / "none.toml"), "test-filter", str(conf), str(log), "--json"])
    rows = _failures(capsys.readouterr().out)
    assert [(r["lineno"], r["host"], r["user"]) for r in rows] == [(3, "192.0.2.20", "alice")]


def test_an_rfc5424_line_reads_as_the_traditional_one_whatever_the_logtype(
    filter_d: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """sshd[logtype=rfc5424] on an RFC 5424 line: our parser gives every filter the line
    ``host app[pid]: msg``, so the filter reads it with the file form of __prefix_line."""
    log = tmp_path / "a.log"
    log.write_text(
        '<38>1 2019-07-08T17:40:17.954167-04:00 mx.example.com sshd 55555 - [a@1 x="[b]"] '
        "Failed unknown for invalid user redmond from 192.0.2.2 port 59197 ssh2\n"
    )
    spec = f"{filter_d / 'sshd.conf'}[logtype=rfc5424]"
    main(["--config", str(tmp_path / "none.toml"), "test-filter", spec, str(log), "--json"])
    out = capsys.readouterr()
    assert [r["host"] for r in _failures(out.out)] == ["192.0.2.2"]
    assert "logtype=rfc5424 read as file" in out.err


def _failures(out: str) -> list[dict[str, Any]]:
    """The failure rows of `test-filter --json`, without its closing summary."""
    return [row for row in map(json.loads, out.splitlines()) if "summary" not in row]
