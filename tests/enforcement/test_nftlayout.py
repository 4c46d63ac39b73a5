"""The table's layout: set names and element keys (enforcement/nftlayout.py)."""

from __future__ import annotations

from ipaddress import ip_network

import pytest

from applianced.enforcement.nftlayout import element_key, kind_of, set_stem, text_key


@pytest.mark.parametrize(
    ("jail", "stem"),
    [
        ("postfix-sasl", "postfix_sasl"),
        ("sshd", "sshd"),
        ("mail.auth", "mail_auth"),
        ("3x", "j_3x"),
    ],
)
def test_set_stem_makes_identifiers(jail: str, stem: str) -> None:
    """Jail names map to nft identifiers by one deterministic rule."""
    assert set_stem(jail) == stem


@pytest.mark.parametrize(
    "network",
    ["192.0.2.7/32", "192.0.2.0/24", "2001:db8::1/128", "::ffff:c000:207/128",
     "2001:db8:0:1::/64", "::/0", "0.0.0.0/0"],
)  # fmt: skip
def test_text_keys_are_the_keys_of_the_network_objects(network: str) -> None:
    """A network's canonical text gives the kind of set and the key its object gives."""
    n = ip_network(network)
    kind = kind_of(n.version, n.prefixlen)
    assert text_key(str(n)) == (n.version, kind, element_key(n))
