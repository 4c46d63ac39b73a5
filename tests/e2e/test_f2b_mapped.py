"""End to end in the kernel (issue 21): Debian's own courier-auth filter names an attacker as
an IPv4-mapped IPv6 address (``ip=[::ffff:198.51.100.7]``); the daemon bans it as the IPv4
address, the form test-filter prints too, and the real nftables set then drops an IPv4
connect from 198.51.100.7. The daemon runs in a namespace the test creates
(``ip netns exec``); failures are sent with the real logger."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from applianced.cli import main
from tests.debian_fail2ban import FetchError, debian_filter_d
from tests.e2e.daemon import LOOPBACK_UDP, Daemon, logger, wait_for
from tests.netns import Topology, netns_missing, ns_exec, tcp_connects, tcp_listener, topology

pytestmark = pytest.mark.skipif(netns_missing() is not None, reason=str(netns_missing()))

PORT = 5514
SERVER, ATTACKER = "198.51.100.1", "198.51.100.7"
LINE = f"LOGIN FAILED, user=sales@example.com, ip=[::ffff:{ATTACKER}]"


@pytest.fixture
def courier_auth() -> Path:
    try:
        return debian_filter_d() / "courier-auth.conf"
    except FetchError as e:
        pytest.skip(str(e))


@pytest.fixture
def net() -> Iterator[Topology]:
    with topology("f2bmap") as t:
        for ns, address in ((t.server, SERVER), (t.attacker, ATTACKER)):
            ns_exec(ns, "ip", "addr", "add", f"{address}/24", "dev", "veth0")
        yield t


def test_test_filter_prints_what_the_daemon_bans(
    courier_auth: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = tmp_path / "mail.log"
    log.write_text(f"Nov 22 10:00:01 mx imapd-ssl: {LINE}\n")
    main(
        [
            "--config",
            str(tmp_path / "none.toml"),
            "test-filter",
            str(courier_auth),
            str(log),
            "--json",
        ]
    )
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    failures = [r for r in rows if "summary" not in r]  # the last row is the summary
    assert [(r["lineno"], r["host"], r["user"]) for r in failures] == [
        (1, ATTACKER, "sales@example.com")
    ]


def test_a_mapped_address_bans_the_ipv4_host_in_the_kernel(
    courier_auth: Path, tmp_path: Path, net: Topology
) -> None:
    t = net
    config = LOOPBACK_UDP.format(port=PORT) + (
        f'\n[defaults]\nbantime = "1h"\nmaxretry = 3\n\n'
        f'[jails.courier-auth]\nfilter = "{courier_auth}"\nports = [143]\n'
    )
    with tcp_listener(t.server, [(SERVER, 143)]):
        d = Daemon(tmp_path, config, args=(), prefix=("ip", "netns", "exec", t.server)).start()
        try:
            assert tcp_connects(t.attacker, SERVER, 143)
            for _ in range(3):
                logger(
                    PORT,
                    LINE,
                    tag="imapd-ssl",
                    extra=("--rfc3164",),
                    prefix=("ip", "netns", "exec", t.server),
                )
            ban = wait_for("the ban", lambda: d.ctl("banned"))[0]
            assert ban["address"] == f"{ATTACKER}/32"
            assert not tcp_connects(t.attacker, SERVER, 143)
        finally:
            d.stop()
