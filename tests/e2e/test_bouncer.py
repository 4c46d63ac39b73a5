"""End to end with the real bouncer: Debian's ``crowdsec-firewall-bouncer`` (its binary, with
its own config file, nftables mode) in a namespace that plays the mail server, pulling the
decision stream of the real daemon in the appliance's namespace over TLS; failures sent with
the real ``logger``; an attacker namespace that connects to the mail server's port 25.

    attacker 192.0.2.2 ── 192.0.2.1 mail server (port 25, the bouncer) 198.51.100.2
                                                    │ https://198.51.100.1:8080 (the stream)
                                          appliance 198.51.100.1 (--dry-run; syslog on lo)

Nothing here touches the host's ruleset: the bouncer runs under ``ip netns exec`` and the
appliance with ``--dry-run``; every namespace is deleted at the end.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.debian_bouncer import FetchError, bouncer_binary
from tests.e2e.daemon import BIN, LOOPBACK_UDP, Daemon, sasl_failures, wait_for
from tests.netns import (
    Topology,
    netns,
    netns_missing,
    ns_exec,
    tcp_connects,
    tcp_listener,
    topology,
    wait_until,
)

pytestmark = pytest.mark.skipif(netns_missing() is not None, reason=str(netns_missing()))

SYSLOG = 5514
STREAM = 8080
APPLIANCE, MAIL = "198.51.100.1", "198.51.100.2"
POLL = 1.0  # the bouncer's update_frequency, seconds
# One poll, plus the bouncer's start and a loaded machine's slack.
WITHIN_A_POLL = 20.0

CONFIG = (
    LOOPBACK_UDP
    + """
[defaults]
bantime = "1h"
maxretry = 3
protocol = "tcp"

[jails.postfix-sasl]
filter = "postfix-sasl"
ports = [25]

[decisions]
address = "{appliance}"
port = {stream}
cert = "tls/server.pem"
key = "tls/server.key"
"""
)

BOUNCER = """\
mode: nftables
update_frequency: {poll}s
daemonize: false
log_mode: stdout
log_level: info
pid_dir: {work}
api_url: https://{appliance}:{stream}/
api_key: {key}
ca_cert_path: {work}/tls/ca.pem
disable_ipv6: true
deny_action: DROP
supported_decisions_types:
  - ban
nftables:
  ipv4:
    enabled: true
    set-only: false
    table: {table}
    chain: {table}-chain
  ipv6:
    enabled: false
prometheus:
  enabled: false
"""


@dataclass(frozen=True, slots=True)
class Site:
    net: Topology  # server: the mail server; attacker
    appliance: str  # the appliance's namespace


@pytest.fixture
def site() -> Iterator[Site]:
    with topology("bnc") as net, netns("bnc-p") as appliance:
        ns_exec(
            appliance, "ip", "link", "add", "veth1", "type", "veth", "peer", "name", "veth1",
            "netns", net.server,
        )  # fmt: skip
        for ns, address in ((appliance, APPLIANCE), (net.server, MAIL)):
            ns_exec(ns, "ip", "addr", "add", f"{address}/24", "dev", "veth1")
            ns_exec(ns, "ip", "link", "set", "veth1", "up")
        yield Site(net, appliance)


def ctl(work: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "appliancectl"), "--config", str(work / "appliance.toml"), *args],
        capture_output=True,
        text=True,
        timeout=30,
    )


def bouncers(work: Path) -> list[dict[str, object]]:
    listed = ctl(work, "bouncer", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    found: list[dict[str, object]] = json.loads(listed.stdout)
    return found


def start_appliance(work: Path, site: Site) -> Daemon:
    text = CONFIG.format(port=SYSLOG, appliance=APPLIANCE, stream=STREAM)
    return Daemon(work, text, prefix=("ip", "netns", "exec", site.appliance)).start()


def start_bouncer(work: Path, site: Site, key: str, table: str) -> subprocess.Popen[str]:
    conf = work / f"{table}.yaml"
    conf.write_text(
        BOUNCER.format(
            poll=POLL, work=work, appliance=APPLIANCE, stream=STREAM, key=key, table=table
        )
    )
    log = (work / f"{table}.log").open("w")
    proc = subprocess.Popen(
        ["ip", "netns", "exec", site.net.server, str(bouncer_binary()), "-c", str(conf)],
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
    )
    log.close()
    return proc


def bouncer_log(work: Path, table: str = "cstest") -> str:
    return (work / f"{table}.log").read_text(errors="replace")


def stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def elements(site: Site, table: str) -> list[str]:
    """The addresses in the bouncer's set in the mail server's namespace."""
    got = ns_exec(site.net.server, "nft", "-j", "list", "table", "ip", table, check=False)
    if got.returncode != 0:
        return []
    found = []
    for item in json.loads(got.stdout)["nftables"]:
        for elem in item.get("set", {}).get("elem", []):
            value = elem["elem"]["val"] if isinstance(elem, dict) and "elem" in elem else elem
            found.append(str(value))
    return found


def test_the_real_bouncer_enforces_the_stream(tmp_path: Path, site: Site) -> None:
    """Failures → the attacker cannot reach port 25 within a poll; a restart of the appliance
    neither drops nor duplicates the element; unban opens it; a short ban expires; a bouncer
    with a wrong key is refused and counted."""
    try:
        bouncer_binary()
    except FetchError as e:
        pytest.skip(str(e))
    net = site.net
    assert ctl(tmp_path, "tls", "init", "--dir", str(tmp_path / "tls"), "--server-name",
               APPLIANCE).returncode == 0  # fmt: skip
    appliance = start_appliance(tmp_path, site)
    added = ctl(tmp_path, "bouncer", "add", "mx1", "--json")
    assert added.returncode == 0, added.stderr
    key = json.loads(added.stdout)["api_key"]
    bouncer = start_bouncer(tmp_path, site, key, "cstest")
    try:
        with tcp_listener(net.server, [(net.server_v4, 25)]):
            assert tcp_connects(net.attacker, net.server_v4, 25)
            seen = wait_for(
                "the bouncer's first pull",
                lambda: [b for b in bouncers(tmp_path) if b["last_pull"]],
                WITHIN_A_POLL,
            )
            assert seen[0]["address"] == MAIL
            assert seen[0]["version"].startswith("crowdsec-firewall-bouncer/")

            sasl_failures(SYSLOG, net.attacker_v4, 3, site.appliance)
            wait_until(
                lambda: not tcp_connects(net.attacker, net.server_v4, 25, timeout=0.5),
                WITHIN_A_POLL,
                "the bouncer drops the banned attacker",
            )
            assert elements(site, "cstest") == [net.attacker_v4]

            appliance.stop()
            appliance = start_appliance(tmp_path, site)
            pulls = appliance.ctl("status")["decisions"]["pulls"]
            wait_for(
                "a pull after the restart",
                lambda: appliance.ctl("status")["decisions"]["pulls"] > pulls + 1,
                WITHIN_A_POLL,
            )
            assert elements(site, "cstest") == [net.attacker_v4]
            assert not tcp_connects(net.attacker, net.server_v4, 25, timeout=0.5)

            appliance.ctl("unban", net.attacker_v4)
            wait_until(
                lambda: tcp_connects(net.attacker, net.server_v4, 25),
                WITHIN_A_POLL,
                "the unban reaches the bouncer",
            )
            assert elements(site, "cstest") == []

            appliance.ctl("ban", "postfix-sasl", net.attacker_v4, "--for", "4s")
            wait_until(
                lambda: not tcp_connects(net.attacker, net.server_v4, 25, timeout=0.5),
                WITHIN_A_POLL,
                "the short ban reaches the bouncer",
            )
            wait_until(
                lambda: tcp_connects(net.attacker, net.server_v4, 25),
                WITHIN_A_POLL,
                "the short ban expires at the bouncer",
            )
            # The element's own timeout ends it too; the stream's deletion must also arrive.
            wait_until(
                lambda: bouncer_log(tmp_path).count("decision deleted") == 2,
                WITHIN_A_POLL,
                "the unban's and the expiry's deletions in the bouncer's log",
            )

            refused = appliance.ctl("status")["decisions"]["refused"]
            wrong = start_bouncer(tmp_path, site, "0" * 64, "cswrong")
            try:
                wait_for(
                    "the wrong key refused",
                    lambda: appliance.ctl("status")["decisions"]["refused"] > refused,
                    WITHIN_A_POLL,
                )
                assert elements(site, "cswrong") == []
                rc, shown, _ = appliance.ctl_rc("status")
                assert rc == 0 and "refused (a missing or wrong key" in shown
            finally:
                stop(wrong)
    finally:
        stop(bouncer)
        appliance.stop()
    assert bouncer.returncode is not None
