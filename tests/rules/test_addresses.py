"""The one canonical form of addresses and networks, and how far a ban of an address reaches."""

from __future__ import annotations

from ipaddress import ip_address, ip_network

import pytest

from applianced.rules.addresses import (
    canonical_network,
    host_only,
    network_of,
    parse_address,
    parse_network,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("::ffff:192.0.2.10", "192.0.2.10"),
        ("::FFFF:c000:20a", "192.0.2.10"),
        (" 192.0.2.10 ", "192.0.2.10"),
        ("2001:db8::7", "2001:db8::7"),
        ("64:ff9b::198.51.100.200", "64:ff9b::c633:64c8"),
        ("::192.0.2.10", "::c000:20a"),  # IPv4-compatible (deprecated) is not IPv4-mapped
    ],
)
def test_parse_address_is_canonical(text: str, expected: str) -> None:
    assert parse_address(text) == ip_address(expected)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("::ffff:192.0.2.10/128", "192.0.2.10/32"),
        ("::ffff:192.0.2.10", "192.0.2.10/32"),
        ("::ffff:192.0.2.77/120", "192.0.2.0/24"),
        ("::ffff:0:0/96", "0.0.0.0/0"),
        ("::/0", "::/0"),  # wider than the mapped range: stays IPv6
        ("::fffe:0:0/96", "::fffe:0:0/96"),
        ("203.0.113.9/24", "203.0.113.0/24"),
    ],
)
def test_parse_network_is_canonical(text: str, expected: str) -> None:
    assert parse_network(text) == ip_network(expected)
    assert canonical_network(ip_network(text, strict=False)) == ip_network(expected)


@pytest.mark.parametrize("text", ["", "192.0.2.300", "not an address", "2001:db8::/129"])
def test_bad_texts_say_what_is_expected(text: str) -> None:
    with pytest.raises(ValueError, match=r"203\.0\.113\.7"):
        parse_network(text)
    with pytest.raises(ValueError, match=r"203\.0\.113\.7"):
        parse_address(text)


@pytest.mark.parametrize(
    ("address", "prefix", "expected"),
    [
        ("203.0.113.7", 64, "203.0.113.7/32"),
        ("::ffff:203.0.113.7", 64, "203.0.113.7/32"),
        ("2001:db8:1:2:3::5", 64, "2001:db8:1:2::/64"),
        ("2001:db8:1:2:3::5", 48, "2001:db8:1::/48"),
        ("2001:db8::5", 128, "2001:db8::5/128"),
        ("64:ff9b::198.51.100.200", 64, "64:ff9b::c633:64c8/128"),
        ("64:ff9b:1:ab::c633:64c8", 48, "64:ff9b:1:ab::c633:64c8/128"),
        ("2001:0:4136:e378:8000:63bf:3fff:fdd2", 32, "2001:0:4136:e378:8000:63bf:3fff:fdd2/128"),
        ("64:ff9b:0:0:1::1", 64, "64:ff9b::/64"),  # outside the /96: an ordinary prefix
    ],
)
def test_network_of(address: str, prefix: int, expected: str) -> None:
    assert network_of(ip_address(address), prefix) == ip_network(expected)


def test_host_only_ranges_end_where_they_should() -> None:
    inside = [
        "64:ff9b::",
        "64:ff9b::ffff:ffff",
        "64:ff9b:1::",
        "64:ff9b:1:ffff:ffff:ffff:ffff:ffff",
    ]
    inside += ["2001::", "2001:0:ffff:ffff:ffff:ffff:ffff:ffff"]
    outside = ["64:ff9b::1:0:0", "64:ff9a:ffff::", "64:ff9b:2::", "2001:1::", "2001:db8::1"]
    assert all(host_only(int(ip_address(a))) for a in inside)
    assert not any(host_only(int(ip_address(a))) for a in outside)
