"""The nftables backend, against the real kernel, always inside network namespaces.

The backend runs in a child process inside a namespace each test creates (tests.netns.remote);
the table is read back with ``nft -j`` inside that namespace, and packets are sent between a
server and an attacker namespace. A module fixture checks that the root namespace's ruleset is
byte-identical before and after. Tests of the pure parts (prefix pieces, names, rules, error
messages) need neither root nor nftables.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest

from applianced.enforcement import nftables as nftmod
from applianced.enforcement.base import ElementsRefused, Enforcer, JailRules, Refused, Restored
from applianced.enforcement.nftables import NftablesEnforcer
from applianced.errors import EnforcementError
from applianced.units import MAX_BAN_SECONDS
from tests.enforcement.test_memory import EnforcerContract, ban
from tests.netns import (
    Topology,
    netns,
    netns_missing,
    ns_exec,
    remote,
    tcp_connects,
    tcp_listener,
    tcp_probe,
    topology,
    wait_until,
)

ENFORCER = "applianced.enforcement.nftables:NftablesEnforcer"
SMTP = JailRules("postfix-sasl", ("25",), "tcp")


def require_netns() -> None:
    reason = netns_missing()
    if reason:
        pytest.skip(reason)


@pytest.fixture(scope="module", autouse=True)
def root_ruleset_untouched() -> Iterator[None]:
    """The root namespace's ruleset is byte-identical after this module's tests."""
    if netns_missing():
        yield
        return
    before = subprocess.run(["nft", "list", "ruleset"], capture_output=True, check=True).stdout
    yield
    after = subprocess.run(["nft", "list", "ruleset"], capture_output=True, check=True).stdout
    assert after == before, "a test changed the root namespace's ruleset"


@pytest.fixture
def ns() -> Iterator[str]:
    require_netns()
    with netns("nft") as name:
        yield name


@pytest.fixture
def enforcer(ns: str) -> Iterator[Any]:
    with remote(ns, ENFORCER) as e:
        yield e


@pytest.fixture
def net() -> Iterator[Topology]:
    require_netns()
    with topology("nft") as t:
        yield t


@pytest.fixture
def now() -> float:
    return time.time()


def table(ns: str, name: str = "applianced") -> dict[str, Any]:
    """``nft -j list table inet <name>`` inside ``ns``: sets, chains and rules by kind."""
    out = json.loads(ns_exec(ns, "nft", "-j", "list", "table", "inet", name).stdout)
    found: dict[str, Any] = {"set": {}, "chain": {}, "rule": []}
    for o in out["nftables"]:
        if "set" in o:
            found["set"][o["set"]["name"]] = o["set"]
        elif "chain" in o:
            found["chain"][o["chain"]["name"]] = o["chain"]
        elif "rule" in o:
            found["rule"].append(o["rule"])
    return found


def elements(ns: str, set_name: str) -> dict[str, int | None]:
    """The elements of one of our sets: "addr", "addr/len" or "lo-hi" -> seconds left (None:
    no timeout)."""
    out = json.loads(ns_exec(ns, "nft", "-j", "list", "set", "inet", "applianced", set_name).stdout)
    s = next(o["set"] for o in out["nftables"] if "set" in o)
    result: dict[str, int | None] = {}
    for e in s.get("elem", ()):
        inner = e["elem"] if isinstance(e, dict) and "elem" in e else {"val": e}
        val = inner["val"]
        if isinstance(val, dict) and "prefix" in val:
            key = f"{val['prefix']['addr']}/{val['prefix']['len']}"
        elif isinstance(val, dict) and "range" in val:
            key = "-".join(val["range"])
        else:
            key = str(val)
        result[key] = inner.get("expires")
    return result


# ---------------------------------------------------------------------------------------------
# The shared contract, in a namespace.


class TestNftablesContract(EnforcerContract):
    """The Enforcer contract (tests/enforcement/test_memory.py), on nftables in a namespace."""


def test_is_an_enforcer() -> None:
    """NftablesEnforcer satisfies the Enforcer protocol (checked with a stub context: no kernel)."""

    class Stub:
        def set_json_output(self, value: bool) -> bool:
            return False

    e: Enforcer = NftablesEnforcer(nft=Stub())
    assert isinstance(e, Enforcer)
    assert e.name == "nftables"


# ---------------------------------------------------------------------------------------------
# Layout.


def test_setup_builds_sets_chains_and_rules(ns: str, enforcer: Any) -> None:
    """Ten typed, flagged sets per jail; base chains at -10, accept; one rule per set."""
    enforcer.setup(
        [
            JailRules("postfix-sasl", ("25", "465", "1000-2000"), "tcp"),
            JailRules("dns", ("53",), "both", hook="forward", verdict="reject"),
            JailRules("recidive", ("all",), "udp"),
        ]
    )
    t = table(ns)
    assert set(t["set"]) == {
        f"{stem}{kind}_v{v}"
        for stem in ("postfix_sasl", "dns", "recidive")
        for kind in ("", "_net", "_bl", "_bl_net")
        for v in (4, 6)
    } | {
        f"{stem}{kind}_p64_v6"
        for stem in ("postfix_sasl", "dns", "recidive")
        for kind in ("", "_bl")
    }
    flags = {n: sorted(s.get("flags", [])) for n, s in t["set"].items() if n.startswith("dns")}
    assert flags == {
        "dns_v4": ["timeout"],
        "dns_v6": ["timeout"],
        "dns_net_v4": ["interval", "timeout"],
        "dns_net_v6": ["interval", "timeout"],
        "dns_bl_v4": [],
        "dns_bl_v6": [],
        "dns_bl_net_v4": ["interval"],
        "dns_bl_net_v6": ["interval"],
        "dns_p64_v6": ["timeout"],
        "dns_bl_p64_v6": [],
    }
    assert t["set"]["dns_p64_v6"]["type"] == "ipv6_addr"
    assert t["set"]["dns_net_v6"]["type"] == "ipv6_addr"
    assert t["set"]["dns_bl_v4"]["type"] == "ipv4_addr"
    for hook in ("input", "forward"):
        c = t["chain"][hook]
        assert (c["type"], c["hook"], c["prio"], c["policy"]) == ("filter", hook, -10, "accept")

    by_set = {r["expr"][0]["match"]["right"]: r for r in t["rule"]}
    assert len(t["rule"]) == len(by_set) == 30
    smtp = by_set["@postfix_sasl_net_v6"]
    assert smtp["chain"] == "input" and smtp["comment"] == "jail postfix-sasl"
    assert smtp["expr"][0]["match"]["left"] == {"payload": {"protocol": "ip6", "field": "saddr"}}
    assert smtp["expr"][1]["match"] == {
        "op": "==",
        "left": {"payload": {"protocol": "tcp", "field": "dport"}},
        "right": {"set": [25, 465, {"range": [1000, 2000]}]},
    }
    assert "drop" in smtp["expr"][-1]
    p64 = by_set["@postfix_sasl_p64_v6"]["expr"][0]["match"]["left"]
    assert p64 == {
        "&": [{"payload": {"protocol": "ip6", "field": "saddr"}}, "ffff:ffff:ffff:ffff::"]
    }

    dns = by_set["@dns_bl_v4"]
    assert dns["chain"] == "forward"
    assert dns["expr"][0]["match"]["left"] == {"payload": {"protocol": "ip", "field": "saddr"}}
    assert dns["expr"][1]["match"]["right"] == {"set": ["tcp", "udp"]}
    assert dns["expr"][2]["match"]["left"] == {"payload": {"protocol": "th", "field": "dport"}}
    assert dns["expr"][2]["match"]["right"] == 53
    assert "reject" in dns["expr"][-1]

    every = by_set["@recidive_v4"]
    assert [list(x) for x in every["expr"]] == [["match"], ["counter"], ["drop"]]


def test_setup_uses_the_configured_table_and_priority(ns: str) -> None:
    """The table name and the chains' priority come from the constructor."""
    with remote(ns, ENFORCER, table="appl_test", priority=-50) as e:
        e.setup([SMTP])
    t = table(ns, "appl_test")
    assert t["chain"]["input"]["prio"] == -50
    assert "postfix_sasl_v4" in t["set"]


def test_other_tables_are_never_touched(ns: str, enforcer: Any, now: float) -> None:
    """Every operation leaves another table of the namespace exactly as it was."""
    ns_exec(
        ns,
        "nft",
        "add table inet other; add set inet other s { type ipv4_addr; };"
        " add element inet other s { 192.0.2.2 };"
        " add chain inet other c { type filter hook input priority 0; policy accept; };"
        " add rule inet other c tcp dport 22 accept",
    )
    before = ns_exec(ns, "nft", "list", "table", "inet", "other").stdout
    enforcer.setup([SMTP])
    enforcer.apply([ban("postfix-sasl", "192.0.2.2/32", now)], [], now)
    enforcer.restore([ban("postfix-sasl", "192.0.2.3/32", now)], now)
    enforcer.counts()
    enforcer.flush()
    enforcer.setup([])
    assert ns_exec(ns, "nft", "list", "table", "inet", "other").stdout == before


# ---------------------------------------------------------------------------------------------
# Packets.


def test_ipv4_ban_drops_the_guarded_port_only(net: Topology, now: float) -> None:
    """A banned IPv4 host loses the jail's port only, and gets it back when unbanned."""
    srv = net.server_v4
    with tcp_listener(net.server, [(srv, 25), (srv, 80)]), remote(net.server, ENFORCER) as e:
        e.setup([SMTP])
        wait_until(lambda: tcp_connects(net.attacker, srv, 25), 10.0, "attacker reaches port 25")
        b = ban("postfix-sasl", "192.0.2.2/32", now)
        e.apply([b], [], now)
        assert tcp_probe(net.attacker, srv, 25, timeout=1.0) == "TimeoutError"
        assert tcp_connects(net.attacker, srv, 80)
        e.apply([], [b], now)
        assert tcp_connects(net.attacker, srv, 25)


def test_ipv6_prefix_ban_covers_the_attackers_address(net: Topology, now: float) -> None:
    """A /64 ban drops connections from any address inside it; unbanned, they pass again."""
    srv = net.server_v6
    with tcp_listener(net.server, [(srv, 25), (srv, 80)]), remote(net.server, ENFORCER) as e:
        e.setup([SMTP])
        wait_until(lambda: tcp_connects(net.attacker, srv, 25), 10.0, "attacker reaches [::1]:25")
        b = ban("postfix-sasl", "2001:db8::/64", now)
        e.apply([b], [], now)
        assert tcp_probe(net.attacker, srv, 25, timeout=1.0) == "TimeoutError"
        assert tcp_connects(net.attacker, srv, 80)
        e.apply([], [b], now)
        assert tcp_connects(net.attacker, srv, 25)


def test_reject_verdict_refuses_at_once(net: Topology, now: float) -> None:
    """With verdict reject, a (blacklisted) client is refused at once, not left to time out."""
    srv = net.server_v4
    jail = JailRules("postfix-sasl", ("25",), "tcp", verdict="reject")
    with tcp_listener(net.server, [(srv, 25)]), remote(net.server, ENFORCER) as e:
        e.setup([jail])
        wait_until(lambda: tcp_connects(net.attacker, srv, 25), 10.0, "attacker reaches port 25")
        e.apply([ban("postfix-sasl", "192.0.2.2/32", now, None)], [], now)
        assert tcp_probe(net.attacker, srv, 25, timeout=5.0) == "ConnectionRefusedError"


# ---------------------------------------------------------------------------------------------
# Elements.


def test_element_timeout_is_the_remaining_time(ns: str, enforcer: Any, now: float) -> None:
    """A ban that started earlier gets the time it has left, not its full duration."""
    enforcer.setup([SMTP])
    started = ban("postfix-sasl", "192.0.2.2/32", now - 400, 1000)  # 600 s left
    enforcer.apply([started, ban("postfix-sasl", "2001:db8::/64", now, 300)], [], now)
    v4, v6 = elements(ns, "postfix_sasl_v4"), elements(ns, "postfix_sasl_p64_v6")
    assert v4.keys() == {"192.0.2.2"} and 590 <= (v4["192.0.2.2"] or 0) <= 600
    assert v6.keys() == {"2001:db8::"} and 290 <= (v6["2001:db8::"] or 0) <= 300


def test_banning_again_sets_the_new_timeout(ns: str, enforcer: Any, now: float) -> None:
    """A second ban of an element replaces its timeout, longer or shorter."""
    enforcer.setup([SMTP])
    for duration in (60, 6000, 120):
        enforcer.apply(
            [
                ban("postfix-sasl", "192.0.2.2/32", now, duration),
                ban("postfix-sasl", "2001:db8::/64", now, duration),
                ban("postfix-sasl", "2001:db8:1::/48", now, duration),
            ],
            [],
            now,
        )
        for name, key in (
            ("postfix_sasl_v4", "192.0.2.2"),
            ("postfix_sasl_p64_v6", "2001:db8::"),
            ("postfix_sasl_net_v6", "2001:db8:1::/48"),
        ):
            left = elements(ns, name)[key]
            assert left is not None and duration - 10 <= left <= duration


def test_permanent_bans_go_to_the_blacklist_sets(ns: str, enforcer: Any, now: float) -> None:
    """Permanent bans are timeout-less elements of the _bl_ sets, moved there from _v4."""
    enforcer.setup([SMTP])
    enforcer.apply([ban("postfix-sasl", "192.0.2.2/32", now)], [], now)
    enforcer.apply(
        [
            ban("postfix-sasl", "192.0.2.2/32", now, None),
            ban("postfix-sasl", "198.51.100.0/24", now, None),
        ],
        [],
        now,
    )
    assert elements(ns, "postfix_sasl_bl_v4") == {"192.0.2.2": None}
    assert elements(ns, "postfix_sasl_bl_net_v4") == {"198.51.100.0/24": None}
    assert elements(ns, "postfix_sasl_v4") == {}


def test_unbans_of_missing_elements_do_not_fail_the_batch(
    ns: str, enforcer: Any, now: float
) -> None:
    """Deleting absent elements of any set type leaves the batch's real ban applied."""
    enforcer.setup([SMTP])
    missing = [
        ban("postfix-sasl", n, now, d)
        for n, d in (
            ("192.0.2.9/32", 60),
            ("2001:db8::9/128", None),
            ("203.0.113.0/24", 60),
            ("2001:db8:9::/48", None),
        )
    ]
    enforcer.apply([ban("postfix-sasl", "192.0.2.2/32", now)], missing, now)
    assert elements(ns, "postfix_sasl_v4").keys() == {"192.0.2.2"}
    assert enforcer.counts() == {"postfix-sasl": 1}


def test_nested_prefix_bans_are_held_as_disjoint_pieces(ns: str, enforcer: Any, now: float) -> None:
    """Nested prefix bans become disjoint pieces, each with the latest expiry covering it."""
    enforcer.setup([SMTP])
    narrow = ban("postfix-sasl", "2001:db8:0:500::/56", now, 3000)
    wide = ban("postfix-sasl", "2001:db8::/48", now, 600)
    enforcer.apply([narrow], [], now)
    enforcer.apply([wide, ban("postfix-sasl", "2001:db8:0:500::/56", now, 3000)], [], now)
    pieces = elements(ns, "postfix_sasl_net_v6")
    assert pieces.keys() == {
        "2001:db8::-2001:db8:0:4ff:ffff:ffff:ffff:ffff",
        "2001:db8:0:500::/56",
        "2001:db8:0:600::-2001:db8:0:ffff:ffff:ffff:ffff:ffff",
    }
    assert 2990 <= (pieces["2001:db8:0:500::/56"] or 0) <= 3000
    enforcer.apply([], [wide], now)
    assert elements(ns, "postfix_sasl_net_v6").keys() == {"2001:db8:0:500::/56"}
    enforcer.apply([wide], [narrow], now)
    assert elements(ns, "postfix_sasl_net_v6").keys() == {"2001:db8::/48"}


def test_setup_again_with_other_ports_keeps_elements(ns: str, enforcer: Any, now: float) -> None:
    """A reload that changes ports rewrites the rules and keeps every element and timeout."""
    enforcer.setup([SMTP])
    enforcer.apply(
        [
            ban("postfix-sasl", "192.0.2.2/32", now, 900),
            ban("postfix-sasl", "2001:db8::/64", now, None),
        ],
        [],
        now,
    )
    enforcer.setup([JailRules("postfix-sasl", ("25", "587"), "tcp")])
    left = elements(ns, "postfix_sasl_v4")["192.0.2.2"]
    assert left is not None and 890 <= left <= 900
    assert elements(ns, "postfix_sasl_bl_p64_v6") == {"2001:db8::": None}
    rule = next(
        r for r in table(ns)["rule"] if r["expr"][0]["match"]["right"] == "@postfix_sasl_v4"
    )
    assert rule["expr"][1]["match"]["right"] == {"set": [25, 587]}


def test_setup_without_a_jail_removes_its_sets_and_rules(ns: str, enforcer: Any) -> None:
    """A jail dropped from the configuration leaves no set, rule or unused chain behind."""
    enforcer.setup([SMTP, JailRules("dns", ("53",), "udp", hook="forward")])
    enforcer.setup([SMTP])
    t = table(ns)
    assert not [n for n in t["set"] if n.startswith("dns")]
    assert {r["comment"] for r in t["rule"]} == {"jail postfix-sasl"}
    assert set(t["chain"]) == {"input"}


def test_a_new_priority_recreates_the_chain_and_keeps_elements(ns: str, now: float) -> None:
    """Changing the chains' priority rebuilds them in the same transaction; bans stay."""
    with remote(ns, ENFORCER) as first:
        first.setup([SMTP])
        first.apply([ban("postfix-sasl", "192.0.2.2/32", now)], [], now)
    with remote(ns, ENFORCER, priority=-200) as second:
        second.setup([SMTP])
    t = table(ns)
    assert t["chain"]["input"]["prio"] == -200
    assert len([r for r in t["rule"] if r["chain"] == "input"]) == 10
    assert elements(ns, "postfix_sasl_v4").keys() == {"192.0.2.2"}


def test_setup_replaces_a_set_whose_definition_changed(ns: str, enforcer: Any) -> None:
    """A set left with other flags (an older layout) is recreated with the right ones."""
    ns_exec(
        ns,
        "nft",
        "add table inet applianced;"
        " add set inet applianced postfix_sasl_v4 { type ipv4_addr; flags interval,timeout; };"
        " add set inet applianced stale_v4 { type ipv4_addr; }",
    )
    enforcer.setup([SMTP])
    sets = table(ns)["set"]
    assert sets["postfix_sasl_v4"]["flags"] == ["timeout"]
    assert "stale_v4" not in sets


def test_a_restarted_daemon_keeps_the_kernels_bans(ns: str, now: float) -> None:
    """A new process's setup keeps the kernel's elements; its restore then reconciles them."""
    with remote(ns, ENFORCER) as first:
        first.setup([SMTP])
        first.apply(
            [ban("postfix-sasl", "192.0.2.2/32", now), ban("postfix-sasl", "2001:db8::/48", now)],
            [],
            now,
        )
    with remote(ns, ENFORCER) as second:
        second.setup([SMTP])
        assert second.counts() == {"postfix-sasl": 2}
        second.restore(
            [
                ban("postfix-sasl", "2001:db8::/48", now),
                ban("postfix-sasl", "2001:db8:0:100::/56", now, 7200),
            ],
            now,
        )
        assert elements(ns, "postfix_sasl_v4") == {}
        assert len(elements(ns, "postfix_sasl_net_v6")) == 3  # /48 split around the /56


def test_a_new_process_bans_again_over_elements_it_did_not_place(ns: str, now: float) -> None:
    """Until its restore, a new process cannot know what a kept set holds: a ban of an
    element an earlier process placed still replaces its timeout (and moves it to the
    blacklist), as when the restore failed and the batch is retried."""
    with remote(ns, ENFORCER) as first:
        first.setup([SMTP])
        first.apply(
            [
                ban("postfix-sasl", "192.0.2.2/32", now, 60),
                ban("postfix-sasl", "192.0.2.3/32", now),
            ],
            [],
            now,
        )
    with remote(ns, ENFORCER) as second:
        second.setup([SMTP])
        second.apply(
            [
                ban("postfix-sasl", "192.0.2.2/32", now, 6000),
                ban("postfix-sasl", "192.0.2.3/32", now, None),
            ],
            [],
            now,
        )
        left = elements(ns, "postfix_sasl_v4")
        assert left.keys() == {"192.0.2.2"} and 5990 <= (left["192.0.2.2"] or 0) <= 6000
        assert elements(ns, "postfix_sasl_bl_v4") == {"192.0.2.3": None}


def test_restore_reconciles_with_the_store(ns: str, enforcer: Any, now: float) -> None:
    """restore drops elements the store lacks and adds missing ones with remaining time."""
    enforcer.setup([SMTP])
    enforcer.apply(
        [ban("postfix-sasl", "192.0.2.2/32", now), ban("postfix-sasl", "192.0.2.3/32", now)],
        [],
        now,
    )
    enforcer.restore(
        [
            ban("postfix-sasl", "192.0.2.3/32", now - 100, 400),
            ban("postfix-sasl", "192.0.2.4/32", now, None),
        ],
        now,
    )
    v4 = elements(ns, "postfix_sasl_v4")
    assert v4.keys() == {"192.0.2.3"} and 290 <= (v4["192.0.2.3"] or 0) <= 300
    assert elements(ns, "postfix_sasl_bl_v4") == {"192.0.2.4": None}


# ---------------------------------------------------------------------------------------------
# Issue 15: one bad element never blocks a batch; IPv6 /64 bans in a hash set.

WEEKS_166 = 166 * 7 * 86400.0  # beyond the longest element timeout nft 1.0.6 takes


def test_a_ban_beyond_the_longest_timeout_is_capped(ns: str, enforcer: Any, now: float) -> None:
    """A ban longer than nft's longest element timeout (nft: "value too large") is sent with
    MAX_BAN_SECONDS, in the same transaction as the rest of its batch."""
    enforcer.setup([SMTP])
    enforcer.apply(
        [
            ban("postfix-sasl", "192.0.2.2/32", now, WEEKS_166),
            ban("postfix-sasl", "192.0.2.3/32", now),
            ban("postfix-sasl", "198.51.100.0/24", now, WEEKS_166),
        ],
        [],
        now,
    )
    v4 = elements(ns, "postfix_sasl_v4")
    assert v4.keys() == {"192.0.2.2", "192.0.2.3"}
    assert MAX_BAN_SECONDS - 60 <= (v4["192.0.2.2"] or 0) <= MAX_BAN_SECONDS
    net = elements(ns, "postfix_sasl_net_v4")
    assert MAX_BAN_SECONDS - 60 <= (net["198.51.100.0/24"] or 0) <= MAX_BAN_SECONDS


def test_a_restore_with_a_ban_beyond_the_longest_timeout_restores_every_ban(
    ns: str, enforcer: Any, now: float
) -> None:
    """The issue's start: six active bans, one of 166 weeks; every one reaches the kernel."""
    enforcer.setup([SMTP])
    rows = [
        Restored("postfix-sasl", "192.0.2.2/32", now + 3600),
        Restored("postfix-sasl", "192.0.2.3/32", now + WEEKS_166),
        Restored("postfix-sasl", "2001:db8::7/128", now + 3600),
        Restored("postfix-sasl", "2001:db8:0:1::/64", now + 3600),
        Restored("postfix-sasl", "198.51.100.0/24", now + 3600),
        Restored("postfix-sasl", "203.0.113.9/32", None),
    ]
    enforcer.restore_rows(rows, now)
    assert enforcer.counts() == {"postfix-sasl": 6}


def test_a_refused_element_is_reported_and_the_rest_of_its_batch_applied(
    ns: str, enforcer: Any, now: float
) -> None:
    """An element the kernel refuses (here it overlaps an element an operator added by hand)
    is reported with nft's words; the other bans of its batch are in the kernel."""
    enforcer.setup([SMTP])
    ns_exec(ns, "nft", "add element inet applianced postfix_sasl_net_v4 { 198.51.100.0/25 }")
    bans = [
        ban("postfix-sasl", "192.0.2.2/32", now),
        ban("postfix-sasl", "198.51.100.0/24", now),
        ban("postfix-sasl", "203.0.113.7/32", now),
        ban("postfix-sasl", "2001:db8::/64", now),
        ban("postfix-sasl", "2001:db8:1::/48", now),
    ]
    with pytest.raises(ElementsRefused) as info:
        enforcer.apply(bans, [], now)
    (refused,) = info.value.refused
    assert (refused.jail, refused.network) == ("postfix-sasl", "198.51.100.0/24")
    assert "interval overlaps" in refused.reason
    assert "198.51.100.0/24" in str(info.value)
    assert elements(ns, "postfix_sasl_v4").keys() == {"192.0.2.2", "203.0.113.7"}
    assert enforcer.counts() == {"postfix-sasl": 5}  # four bans and the operator's element
    enforcer.apply([ban("postfix-sasl", "192.0.2.4/32", now)], [], now)  # nothing left behind
    assert enforcer.counts() == {"postfix-sasl": 6}


def test_a_ruleset_flushed_by_another_tool_fails_the_whole_batch_for_retry(
    ns: str, enforcer: Any, now: float
) -> None:
    """Another tool's ``flush ruleset`` (Debian's /etc/nftables.conf begins with one) took our
    table: a batch is then refused whole, as one EnforcementError that the Appliance retries,
    never element by element as ElementsRefused (which is not retried), and the probe creates
    nothing. Once ``setup`` rebuilt the table, the same batch goes in."""
    enforcer.setup([SMTP])
    ns_exec(ns, "nft", "flush", "ruleset")
    bans = [ban("postfix-sasl", "192.0.2.2/32", now), ban("postfix-sasl", "2001:db8::/64", now)]
    with pytest.raises(EnforcementError) as info:
        enforcer.apply(bans, [], now)
    assert not isinstance(info.value, ElementsRefused)
    assert ns_exec(ns, "nft", "list", "ruleset").stdout.strip() == ""
    enforcer.setup([SMTP])
    enforcer.apply(bans, [], now)
    assert enforcer.counts() == {"postfix-sasl": 2}


def test_an_ipv6_64_ban_is_one_element_of_a_hash_set(ns: str, enforcer: Any, now: float) -> None:
    """A /64 ban is its network address in the jail's plain timeout set ``_p64_v6`` (matched
    on the source address masked to 64 bits), never an interval element: nft 1.0.6 reads
    every interval set back before any change, so intervals would make every ban dearer."""
    enforcer.setup([SMTP])
    enforcer.apply(
        [
            ban("postfix-sasl", "2001:db8:0:7::/64", now, 600),
            ban("postfix-sasl", "2001:db8::/64", now, None),
        ],
        [],
        now,
    )
    p64 = elements(ns, "postfix_sasl_p64_v6")
    assert p64.keys() == {"2001:db8:0:7::"} and 590 <= (p64["2001:db8:0:7::"] or 0) <= 600
    assert elements(ns, "postfix_sasl_bl_p64_v6") == {"2001:db8::": None}
    assert elements(ns, "postfix_sasl_net_v6") == elements(ns, "postfix_sasl_bl_net_v6") == {}
    enforcer.apply([], [ban("postfix-sasl", "2001:db8:0:7::/64", now)], now)
    assert elements(ns, "postfix_sasl_p64_v6") == {}
    assert enforcer.counts() == {"postfix-sasl": 1}


def test_nested_bans_in_different_sets_are_lifted_one_by_one(net: Topology, now: float) -> None:
    """A /128, its /64 and a /48 over them live in three sets; each set drops on its own, so
    the attacker stays dropped until the last covering ban is lifted."""
    srv = net.server_v6
    host, p64, p48 = (
        ban("postfix-sasl", n, now) for n in ("2001:db8::2/128", "2001:db8::/64", "2001:db8::/48")
    )
    with tcp_listener(net.server, [(srv, 25)]), remote(net.server, ENFORCER) as e:
        e.setup([SMTP])
        wait_until(lambda: tcp_connects(net.attacker, srv, 25), 10.0, "attacker reaches [::1]:25")
        e.apply([host, p64, p48], [], now)
        assert e.counts() == {"postfix-sasl": 3}
        for lifted in (p64, host):
            e.apply([], [lifted], now)
            assert tcp_probe(net.attacker, srv, 25, timeout=1.0) == "TimeoutError"
        e.apply([], [p48], now)
        assert tcp_connects(net.attacker, srv, 25)
        assert e.counts() == {"postfix-sasl": 0}


def test_setup_and_restore_move_a_table_of_the_older_layout(ns: str, now: float) -> None:
    """A table left by a version that held /64s as intervals: setup keeps the old element in
    force (no window) and adds the /64 sets and rules; restore moves the ban to its hash set."""
    ns_exec(
        ns,
        "nft",
        "add table inet applianced;"
        " add chain inet applianced input { type filter hook input priority -10; policy accept; };"
        " add set inet applianced postfix_sasl_net_v6 { type ipv6_addr; flags interval,timeout; };"
        " add element inet applianced postfix_sasl_net_v6 { 2001:db8::/64 timeout 1h };"
        " add rule inet applianced input ip6 saddr @postfix_sasl_net_v6 tcp dport 25 drop",
    )
    with remote(ns, ENFORCER) as e:
        e.setup([SMTP])
        assert elements(ns, "postfix_sasl_net_v6").keys() == {"2001:db8::/64"}
        rules = {json.dumps(r["expr"][0]["match"]) for r in table(ns)["rule"]}
        assert any('"@postfix_sasl_p64_v6"' in r and "ffff:ffff:ffff:ffff::" in r for r in rules)
        e.restore([ban("postfix-sasl", "2001:db8::/64", now)], now)
        assert elements(ns, "postfix_sasl_net_v6") == {}
        assert elements(ns, "postfix_sasl_p64_v6").keys() == {"2001:db8::"}


def test_a_refused_restore_row_is_reported_and_the_rest_restored(now: float) -> None:
    """restore sends halves of a refused batch until the bad row stands alone; every other row
    reaches the kernel, the sets are flushed once, and the bad row is reported."""
    rec = _Recording(refuse="Error: value too large", refuse_text="192.0.2.5")
    e = NftablesEnforcer(nft=rec)
    e.setup([SMTP])
    rows = [Restored("postfix-sasl", f"192.0.2.{i}/32", now + 60) for i in range(1, 9)]
    with pytest.raises(ElementsRefused) as info:
        e.restore_rows(rows, now)
    assert info.value.refused == (
        Refused("postfix-sasl", "192.0.2.5/32", "Error: value too large"),
    )
    accepted = "".join(b for b in rec.batches if rec.refuse_text not in b)
    assert all(f"192.0.2.{i} " in accepted for i in (1, 2, 3, 4, 6, 7, 8))
    assert accepted.count("flush set inet applianced postfix_sasl_v4") == 1


def test_a_kernel_refusing_everything_keeps_the_whole_batch(now: float) -> None:
    """When the kernel refuses even an empty change (no permission, say), the batch is not
    split: one EnforcementError for the whole, which the Appliance retries."""
    rec = _Recording()
    e = NftablesEnforcer(nft=rec)
    e.setup([SMTP])
    rec.refuse, rec.refuse_listings = "Error: Operation not permitted", True
    bans = [ban("postfix-sasl", f"192.0.2.{i}/32", now) for i in range(1, 65)]
    with pytest.raises(EnforcementError, match="Operation not permitted") as info:
        e.apply(bans, [], now)
    assert not isinstance(info.value, ElementsRefused)
    assert len(rec.batches) == 1  # the batch, then only a listing of the sets (the probe)


# ---------------------------------------------------------------------------------------------
# Errors and availability.


def test_a_refused_transaction_raises_and_changes_nothing(ns: str, enforcer: Any) -> None:
    """A setup the kernel refuses raises with nft's text and advice; the table is unchanged."""
    enforcer.setup([SMTP])
    before = ns_exec(ns, "nft", "list", "table", "inet", "applianced").stdout
    with pytest.raises(EnforcementError, match=r"(?s)refused to set up.*CAP_NET_ADMIN"):
        enforcer.setup([SMTP, JailRules("x" * 300, ("25",), "tcp")])  # names too long
    assert ns_exec(ns, "nft", "list", "table", "inet", "applianced").stdout == before


def test_available_inside_a_namespace(enforcer: Any) -> None:
    """available() is None where libnftables works (root in a namespace)."""
    assert enforcer.available() is None


def test_available_names_a_missing_binding(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the python binding, available() says so and the constructor refuses."""
    monkeypatch.setattr(nftmod, "nftables", None)
    assert "python3-nftables" in (NftablesEnforcer.available() or "")
    with pytest.raises(EnforcementError, match="python3-nftables"):
        NftablesEnforcer()


def test_errors_name_nfts_text_and_what_to_check() -> None:
    """rc != 0 becomes EnforcementError with nft's message and the operator's checklist."""

    class Refusing:
        def set_json_output(self, value: bool) -> bool:
            return True

        def set_terse_output(self, value: bool) -> bool:
            return False

        def json_cmd(self, root: dict[str, Any]) -> tuple[int, str, str]:
            return 1, "", "Error: Could not process rule: Operation not permitted\n"

    e = NftablesEnforcer(nft=Refusing())
    with pytest.raises(EnforcementError) as info:
        e.setup([SMTP])
    text = str(info.value)
    assert "Operation not permitted" in text and "CAP_NET_ADMIN" in text
    assert "nf_tables kernel modules" in text


@pytest.mark.parametrize("ports", [("smtp",), ("0",), ("70000",), ("2000-1000",), ("25,587",), ()])
def test_bad_ports_are_refused_before_any_kernel_call(ports: tuple[str, ...]) -> None:
    """Ports that are not numbers, ranges or "all" raise EnforcementError naming the jail."""
    e = NftablesEnforcer(nft=_NoKernel())
    with pytest.raises(EnforcementError, match="postfix-sasl"):
        e.setup([JailRules("postfix-sasl", ports, "tcp")])


def test_jails_whose_set_names_collide_are_refused() -> None:
    """Two jails mapping to the same set names (a-b, a_b) are refused before any kernel call."""
    e = NftablesEnforcer(nft=_NoKernel())
    with pytest.raises(EnforcementError, match="would share"):
        e.setup([JailRules("a-b", ("25",), "tcp"), JailRules("a_b", ("25",), "tcp")])


class _NoKernel:
    def set_json_output(self, value: bool) -> bool:
        return True

    def set_terse_output(self, value: bool) -> bool:
        raise AssertionError("no kernel call expected")

    def json_cmd(self, root: dict[str, Any]) -> tuple[int, str, str]:
        raise AssertionError("no kernel call expected")


# ---------------------------------------------------------------------------------------------
# Pure parts.


class _Recording:
    """A libnftables context with an empty ruleset that records the nft-syntax batches and
    refuses them with ``refuse`` when set (only those holding ``refuse_text``, when set)."""

    def __init__(self, refuse: str = "", refuse_text: str = "") -> None:
        self.batches: list[str] = []
        self.sets: dict[str, dict[str, Any]] = {}
        self.refuse_listings = False  # refuse listings too (with ``refuse``)
        self.refuse = refuse
        self.refuse_text = refuse_text  # refuse only batches with this text (every one if "")

    def set_json_output(self, value: bool) -> bool:
        return True

    def set_terse_output(self, value: bool) -> bool:
        return False

    def json_cmd(self, root: dict[str, Any]) -> tuple[int, dict[str, Any], str]:
        """Keeps the sets a setup adds, and lists them (the probe of a refused batch)."""
        listed = []
        for command in root["nftables"]:
            made = command.get("add", {}).get("set")
            if made is not None:
                self.sets[made["name"]] = made
            if "list" in command:
                if self.refuse_listings:
                    return 1, {}, self.refuse
                listed = [{"set": made} for made in self.sets.values()]
        return 0, {"nftables": listed}, ""

    def cmd(self, text: str) -> tuple[int, str, str]:
        self.batches.append(text)
        refused = self.refuse and self.refuse_text in text
        return (1, "", self.refuse) if refused else (0, "", "")


def test_bans_restored_from_rows_are_lifted_by_their_objects(now: float) -> None:
    """restore goes through restore_rows (the store's text, no address objects); what it
    places is known to the object path of apply: unbanning each Ban lifts its element, and
    the bookkeeping ends empty. A jail not set up is skipped."""
    bans = [
        ban("postfix-sasl", "192.0.2.2/32", now - 100, 400),
        ban("postfix-sasl", "192.0.2.3/32", now, None),
        ban("postfix-sasl", "2001:db8::7/128", now),
        ban("postfix-sasl", "2001:db8:0:1::/64", now),
        ban("postfix-sasl", "198.51.100.0/24", now, 600),
        ban("postfix-sasl", "198.51.100.128/25", now, 7200),
    ]
    rec = _Recording()
    e = NftablesEnforcer(nft=rec)
    e.setup([SMTP])
    e.restore([*bans, ban("gone", "192.0.2.9/32", now)], now)
    restored = rec.batches[-1]
    assert "198.51.100.128/25" in restored and "192.0.2.9" not in restored
    placed = {"192.0.2.2", "192.0.2.3", "2001:db8::7", "2001:db8:0:1::"}
    assert set().union(*(e._placed or {}).values()) == placed
    e.apply([], bans, now)
    deletes = [line for line in rec.batches[-1].splitlines() if line.startswith("delete element")]
    for host in placed:
        assert any(line.endswith(f"{{ {host} }}") for line in deletes), host
    assert not any((e._placed or {}).values())
    assert not any(ps.pieces for ps in e._prefix_sets.values())


def test_a_refused_restore_names_the_batch(now: float) -> None:
    """A refused restore raises an EnforcementError with nftables' words."""
    refuse = "Error: Could not process rule: No buffer space available"
    e = NftablesEnforcer(nft=_Recording(refuse))
    e.setup([SMTP])
    b = ban("postfix-sasl", "192.0.2.2/32", now)
    with pytest.raises(EnforcementError, match="restore 1 ban: " + refuse):
        e.restore_rows([Restored(b.jail, str(b.network), b.expires_at)], now)
