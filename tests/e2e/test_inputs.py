"""End to end, the edges of what operators and log lines give the daemon: IPv4-mapped and NAT64
addresses, ban durations at the kernel's limit, control requests of the wrong type.

The real daemon with its nftables backend in a network namespace of its own, failures sent
with the real logger, requests with the real appliancectl and a raw UNIX socket.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from ipaddress import ip_address
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.daemon import LOOPBACK_UDP, Daemon, sasl_failures, wait_for
from tests.netns import netns, netns_missing, ns_exec

pytestmark = pytest.mark.skipif(netns_missing() is not None, reason=str(netns_missing()))

PORT = 5514
CONFIG = LOOPBACK_UDP.format(port=PORT) + (
    """
[defaults]
bantime = "1h"
maxretry = 3
ignoreip = ["::ffff:198.51.100.201"]

[jails.postfix-sasl]
filter = "postfix-sasl"
ports = [25]
"""
)


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[tuple[Daemon, str]]:
    with netns("inputs") as ns:
        d = Daemon(tmp_path, CONFIG, args=(), prefix=("ip", "netns", "exec", ns))
        try:
            yield d.start(), ns
        finally:
            d.stop()


def elements(ns: str, set_name: str) -> dict[Any, Any]:
    """Address -> seconds left, of one of our sets as nft lists it."""
    out = ns_exec(ns, "nft", "-j", "list", "set", "inet", "applianced", set_name).stdout
    found = {}
    for item in json.loads(out)["nftables"]:
        for elem in item.get("set", {}).get("elem", []):
            found[ip_address(elem["elem"]["val"])] = elem["elem"].get("expires")
    return found


def ask(d: Daemon, request: dict[str, Any]) -> dict[str, Any]:
    """One raw request line on the control socket, as any client could send it."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect(str(d.socket))
        s.sendall(json.dumps(request).encode() + b"\n")
        answer: dict[str, Any] = json.loads(s.makefile("rb").readline())
        return answer


def test_mapped_and_nat64_addresses_from_log_lines(daemon: tuple[Daemon, str]) -> None:
    """ignoreip ::ffff:198.51.100.201 protects 198.51.100.201; a NAT64 offender is banned in
    the kernel as its own address, not as 64:ff9b::/64."""
    d, ns = daemon
    sasl_failures(PORT, "198.51.100.201", 3, ns)
    sasl_failures(PORT, "64:ff9b::198.51.100.200", 3, ns)
    (ban,) = wait_for("the NAT64 ban", lambda: d.ctl("banned"))
    assert ban["address"] == "64:ff9b::c633:64c8/128"
    status = d.ctl("status")["jails"]["postfix-sasl"]
    assert status["ignored"] == 3
    assert set(elements(ns, "postfix_sasl_v6")) == {ip_address("64:ff9b::c633:64c8")}
    assert elements(ns, "postfix_sasl_net_v6") == {}
    assert elements(ns, "postfix_sasl_v4") == {}
    rc, _, err = d.ctl_rc("ban", "postfix-sasl", "::ffff:198.51.100.201/128")
    assert rc == 1 and "protected" in err


def test_ban_durations_at_the_kernels_limit(daemon: tuple[Daemon, str]) -> None:
    """--for beyond 99,999,999 s is refused with the way to a permanent ban; the limit itself
    is accepted by the kernel; Infinity and a list where a jail belongs are clear refusals."""
    d, ns = daemon
    rc, _, err = d.ctl_rc("ban", "postfix-sasl", "198.51.100.7", "--for", "166w")
    assert rc == 1 and "99,999,999 s" in err and "blacklist add" in err
    d.ctl("ban", "postfix-sasl", "198.51.100.8", "--for", "99999999")
    (left,) = elements(ns, "postfix_sasl_v4").values()
    assert 99_999_000 < left <= 99_999_999
    refused = [
        {"verb": "ban", "args": {"jail": "postfix-sasl", "target": "198.51.100.9", "duration": x}}
        for x in (float("inf"), float("nan"), 1e300, True, [60])
    ]
    refused += [
        {"verb": "flush", "args": {"jail": ["postfix-sasl"]}},
        {"verb": "unban", "args": {"target": "198.51.100.8", "jail": {"x": 1}}},
        {"verb": "why", "args": {"target": ["198.51.100.8"]}},
    ]
    for request in refused:
        answer = ask(d, request)
        assert answer["ok"] is False, request
        assert "must be" in answer["error"] or "duration" in answer["error"], answer
        assert "internal error" not in answer["error"]
    assert [b["address"] for b in d.ctl("banned")] == ["198.51.100.8/32"]
    assert "Traceback" not in d.output
