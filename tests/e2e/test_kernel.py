"""End to end in the kernel: the real daemon and its nftables table in a "server" network
namespace, a real TCP client in an "attacker" namespace, failures sent with the real logger.

Nothing here touches the host's own ruleset: the daemon runs under ``ip netns exec``.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from applianced.units import MAX_BAN_SECONDS
from tests.e2e.daemon import LOOPBACK_UDP, Daemon, sasl_failures, wait_for
from tests.netns import Topology, netns_missing, ns_exec, tcp_connects, tcp_listener, topology

pytestmark = pytest.mark.skipif(netns_missing() is not None, reason=str(netns_missing()))

PORT = 5514

CONFIG = (
    LOOPBACK_UDP
    + """
[defaults]
bantime = "{bantime}"
maxretry = 3
protocol = "tcp"

[jails.postfix-sasl]
filter = "postfix-sasl"
ports = [{ports}]
"""
)

EXTRA_JAIL = """
[jails.web]
failregex = ['^web failure from <HOST>$']
programs = ["web"]
ports = [80]
"""


def config(bantime: str = "1h", ports: str = "25", extra: str = "") -> str:
    return CONFIG.format(port=PORT, bantime=bantime, ports=ports) + extra


@pytest.fixture
def net() -> Iterator[Topology]:
    with topology("e2e") as t:
        yield t


def start(tmp_path: Path, t: Topology, text: str) -> Daemon:
    return Daemon(tmp_path, text, args=(), prefix=("ip", "netns", "exec", t.server)).start()


def fail(t: Topology, address: str, n: int = 3) -> None:
    sasl_failures(PORT, address, n, t.server)


def elements(t: Topology, set_name: str) -> list[dict[str, object]]:
    """The elements of one of our sets, as nft lists them (with their expiry in seconds)."""
    out = ns_exec(t.server, "nft", "-j", "list", "set", "inet", "applianced", set_name).stdout
    found = []
    for item in json.loads(out)["nftables"]:
        for elem in item.get("set", {}).get("elem", []):
            found.append(elem["elem"] if isinstance(elem, dict) and "elem" in elem else elem)
    return found


def test_ban_drops_in_the_kernel_survives_sigkill_and_lifts(tmp_path: Path, net: Topology) -> None:
    """Failures close port 25 to the attacker (port 80 stays open); SIGKILL keeps the drop;
    a restart neither loses nor doubles the ban; unban opens the port again."""
    t = net
    with tcp_listener(t.server, [(t.server_v4, 25), (t.server_v4, 80)]):
        d = start(tmp_path, t, config())
        try:
            assert tcp_connects(t.attacker, t.server_v4, 25)
            fail(t, t.attacker_v4)
            ban = wait_for("the ban", lambda: d.ctl("banned"))[0]
            assert ban["address"] == f"{t.attacker_v4}/32"
            assert not tcp_connects(t.attacker, t.server_v4, 25)
            assert tcp_connects(t.attacker, t.server_v4, 80)
            (elem,) = elements(t, "postfix_sasl_v4")
            assert elem["val"] == t.attacker_v4
            assert elem["expires"] == pytest.approx(3600, abs=5)

            d.kill()
            assert not tcp_connects(t.attacker, t.server_v4, 25), "the kernel forgot the ban"
            d.start()
            (after,) = d.ctl("banned")
            assert after["expires_at"] == ban["expires_at"] and after["count"] == 1
            (elem,) = elements(t, "postfix_sasl_v4")
            remaining = ban["expires_at"] - time.time()
            assert elem["expires"] == pytest.approx(remaining, abs=1.5)
            status = d.ctl("status")
            assert status["backend"] == "nftables"
            assert status["jails"]["postfix-sasl"]["kernel_elements"] == 1

            d.ctl("unban", t.attacker_v4)
            assert tcp_connects(t.attacker, t.server_v4, 25)
            assert elements(t, "postfix_sasl_v4") == []
        finally:
            d.stop()
    # A graceful stop leaves the table in place (on_stop = "keep").
    assert "applianced" in ns_exec(t.server, "nft", "list", "tables").stdout


def test_ipv6_ban_and_expiry_in_the_kernel(tmp_path: Path, net: Topology) -> None:
    """An IPv6 attacker is dropped; the /64 would cover the server's own address, so only the
    host is banned; the kernel lifts the ban by itself when it expires."""
    t = net
    with tcp_listener(t.server, [(t.server_v6, 25)]):
        d = start(tmp_path, t, config(bantime="4s"))
        try:
            assert tcp_connects(t.attacker, t.server_v6, 25)
            fail(t, t.attacker_v6)
            (ban,) = wait_for("the IPv6 ban", lambda: d.ctl("banned"))
            assert ban["address"] == f"{t.attacker_v6}/128"
            assert not tcp_connects(t.attacker, t.server_v6, 25)
            wait_for(
                "the ban to expire in the kernel",
                lambda: tcp_connects(t.attacker, t.server_v6, 25, timeout=0.5),
                timeout=15,
            )
            wait_for("the daemon to record the expiry", lambda: not d.ctl("banned"))
        finally:
            d.stop()


def test_manual_cidr_ban_and_reload(tmp_path: Path, net: Topology) -> None:
    """A manual CIDR ban matches the range (one covering the server's own address is refused);
    a reload that changes ports keeps it and guards the new port; one that removes a jail
    removes its sets and rules; a bad config is refused and the running one stays."""
    t = net
    with tcp_listener(t.server, [(t.server_v4, 25), (t.server_v4, 2525), (t.server_v4, 80)]):
        d = start(tmp_path, t, config(extra=EXTRA_JAIL))
        try:
            rc, _, err = d.ctl_rc("ban", "postfix-sasl", "192.0.2.0/24")
            assert rc == 1 and "protected" in err
            d.ctl("ban", "postfix-sasl", "192.0.2.2/31")
            d.ctl("ban", "web", t.attacker_v4)
            assert not tcp_connects(t.attacker, t.server_v4, 25)
            assert tcp_connects(t.attacker, t.server_v4, 2525)
            assert not tcp_connects(t.attacker, t.server_v4, 80)

            d.config.write_text(config(ports='25, "2525"'))
            d.ctl("reload")
            assert not tcp_connects(t.attacker, t.server_v4, 2525)
            assert tcp_connects(t.attacker, t.server_v4, 80)
            table = ns_exec(t.server, "nft", "list", "table", "inet", "applianced").stdout
            assert "web" not in table
            assert [b["address"] for b in d.ctl("banned")] == ["192.0.2.2/31"]

            d.config.write_text("this is not toml")
            rc, _, err = d.ctl_rc("reload")
            assert rc == 1 and "not valid TOML" in err
            assert not tcp_connects(t.attacker, t.server_v4, 25)
        finally:
            d.stop()


def test_on_stop_flush_and_the_flush_verb(tmp_path: Path, net: Topology) -> None:
    """flush lifts every ban; on_stop = "flush" empties the kernel at a graceful stop."""
    t = net
    text = config().replace("[defaults]", '[enforcement]\non_stop = "flush"\n\n[defaults]')
    d = start(tmp_path, t, text)
    try:
        d.ctl("ban", "postfix-sasl", "198.51.100.7")
        d.ctl("ban", "postfix-sasl", "198.51.100.8")
        assert len(elements(t, "postfix_sasl_v4")) == 2
        assert len(d.ctl("flush")) == 2
        assert elements(t, "postfix_sasl_v4") == []
        d.ctl("ban", "postfix-sasl", "198.51.100.9")
    finally:
        d.stop()
    assert elements(t, "postfix_sasl_v4") == []
    d.start()
    try:
        assert len(elements(t, "postfix_sasl_v4")) == 1, "the store's ban is restored at start"
    finally:
        d.stop()


def test_one_bad_ban_blocks_neither_the_restore_nor_its_batch(
    tmp_path: Path, net: Topology
) -> None:
    """Issue 15: a store holding a ban longer than nftables takes (166 weeks, from before the
    bounds) restores every one of its six active bans, the long one capped; a /64 is one element
    of the /64 set; a ban the kernel refuses (it overlaps an element an operator added by hand)
    is reported in status and not retried, and the next ban goes through."""
    t = net
    text = config().replace("[defaults]", '[enforcement]\non_stop = "flush"\n\n[defaults]')
    d = start(tmp_path, t, text)
    networks = ("198.51.100.7", "198.51.100.8", "198.51.100.9", "2001:db8:6::7",
                "2001:db8:5::/64", "203.0.113.0/24")  # fmt: skip
    try:
        for n in networks:
            d.ctl("ban", "postfix-sasl", n)
        p64 = {str(e["val"]) for e in elements(t, "postfix_sasl_p64_v6")}
        assert p64 == {"2001:db8:5::", "2001:db8:6::"}  # an IPv6 address is banned as its /64
    finally:
        d.stop()
    assert elements(t, "postfix_sasl_v4") == [], "on_stop = flush emptied the kernel"
    with sqlite3.connect(tmp_path / "state" / "offenders.sqlite") as db:
        db.execute(
            "UPDATE bans SET expires_at = expires_at + ? WHERE network = '198.51.100.8/32'",
            (166 * 7 * 86400,),
        )
    db.close()
    d.start()
    try:
        status = d.ctl("status")
        assert status["jails"]["postfix-sasl"]["kernel_elements"] == 6
        assert status["health"]["unapplied"] == 0
        long = next(e for e in elements(t, "postfix_sasl_v4") if e["val"] == "198.51.100.8")
        assert long["expires"] == pytest.approx(MAX_BAN_SECONDS, abs=60)

        ns_exec(t.server, "nft", "add element inet applianced postfix_sasl_net_v4 { 10.0.0.0/25 }")
        d.ctl("ban", "postfix-sasl", "10.0.0.0/24")
        health = d.ctl("status")["health"]
        assert health["refused_elements"] == 1 and health["unapplied"] == 0
        assert "10.0.0.0/24" in health["last_error"]
        d.ctl("ban", "postfix-sasl", "198.51.100.10")
        assert "198.51.100.10" in [e["val"] for e in elements(t, "postfix_sasl_v4")]
        assert d.ctl("status")["health"]["refused_elements"] == 1
        assert "refused the element of 10.0.0.0/24" in d.output
    finally:
        d.stop()


def test_host_ruleset_is_untouched(tmp_path: Path) -> None:
    """Running the daemon in a namespace changes nothing in the host's own ruleset."""
    before = subprocess.run(["nft", "list", "ruleset"], capture_output=True, text=True).stdout
    with topology("e2e") as t:
        d = start(tmp_path, t, config())
        try:
            fail(t, t.attacker_v4)
            wait_for("the ban", lambda: d.ctl("banned"))
        finally:
            d.stop()
    after = subprocess.run(["nft", "list", "ruleset"], capture_output=True, text=True).stdout
    assert before == after
