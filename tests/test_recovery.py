"""recovery.py's decision (pure): which kernel elements a start adopts as recovered bans."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from ipaddress import ip_network

from applianced.enforcement.base import Element
from applianced.recovery import RECOVERED_LINE, unaccounted
from applianced.rules.decision import BanKind, IPNetwork
from applianced.store.base import BanRow

NOW = 1_800_000_000.0


def row(jail: str, network: str, ends: float | None = NOW + 3600) -> BanRow:
    return (jail, network, NOW - 60, ends, "auto", 1)


def nothing_ended(
    keys: Sequence[tuple[str, IPNetwork]],
) -> Mapping[tuple[str, IPNetwork], float]:
    return {}


def adopted(elements: list[Element], rows: list[BanRow]) -> list[tuple[str, str]]:
    recovered, _, _ = unaccounted(elements, rows, nothing_ended, NOW, {})
    return [(d.jail, str(d.network)) for d in recovered]


def test_an_element_the_store_lacks_is_adopted_with_the_kernels_times() -> None:
    elements = [Element("sshd", "203.0.113.7/32", NOW + 600, NOW - 3000)]
    (decision,), stale, _ = unaccounted(elements, [], nothing_ended, NOW, {})
    assert stale == 0
    assert (decision.jail, decision.network) == ("sshd", ip_network("203.0.113.7/32"))
    assert decision.at == NOW - 3000 and decision.duration == 3600
    assert decision.kind is BanKind.AUTO and decision.lines == (RECOVERED_LINE,)


def test_a_permanent_element_is_adopted_on_the_blacklist() -> None:
    (decision,), _, _ = unaccounted(
        [Element("sshd", "203.0.113.7/32", None, None)], [], nothing_ended, NOW, {}
    )
    assert decision.kind is BanKind.BLACKLIST and decision.duration is None


def test_an_element_of_an_active_row_or_an_expired_one_is_not_adopted() -> None:
    elements = [
        Element("sshd", "203.0.113.7/32", NOW + 600, NOW - 60),
        Element("sshd", "203.0.113.8/32", NOW - 1, NOW - 600),
    ]
    assert adopted(elements, [row("sshd", "203.0.113.7/32")]) == []


def test_the_pieces_of_nested_prefix_bans_are_not_adopted() -> None:
    """A /48 and a /56 inside it that outlasts it: the interval set holds the /56 and the
    /48's range around it, read back as the prefixes that cover it (a /52, a /51 ...). Each
    lies inside a ban the store holds; one in another jail's prefix, or outside, does not."""
    rows = [row("burst", "2001:db8:7::/48"), row("burst", "2001:db8:7:100::/56", NOW + 7200)]
    pieces = ["2001:db8:7::/56", "2001:db8:7:200::/55", "2001:db8:7:1000::/52"]
    elements = [Element("burst", p, NOW + 3600, NOW - 60) for p in pieces]
    elements += [
        Element("other", "2001:db8:7:1000::/52", NOW + 3600, NOW - 60),
        Element("burst", "2001:db8:8::/56", NOW + 3600, NOW - 60),
    ]
    assert adopted(elements, rows) == [
        ("other", "2001:db8:7:1000::/52"),
        ("burst", "2001:db8:8::/56"),
    ]


def test_an_element_whose_ban_the_store_ended_after_it_was_placed_is_stale() -> None:
    def ended(keys: Sequence[tuple[str, IPNetwork]]) -> Mapping[tuple[str, IPNetwork], float]:
        return {key: NOW - 10 for key in keys}

    elements = [
        Element("sshd", "203.0.113.7/32", NOW + 600, NOW - 60),  # ended after: stale
        Element("sshd", "203.0.113.8/32", NOW + 600, NOW - 5),  # placed after the end
    ]
    recovered, stale, _ = unaccounted(elements, [], ended, NOW, {})
    assert [str(d.network) for d in recovered] == ["203.0.113.8/32"] and stale == 1


def test_an_element_over_an_address_never_to_ban_is_not_adopted() -> None:
    """An element the store lacks that covers the jail's ignoreip, an allowed sender or the
    appliance's own address (put there by hand, or before the config protected it) is left
    to the restore, which removes it; another jail's protection does not count."""
    elements = [
        Element("sshd", "192.0.2.10/32", NOW + 600, NOW - 60),
        Element("sshd", "198.51.100.0/24", NOW + 600, NOW - 60),
        Element("dovecot", "192.0.2.10/32", NOW + 600, NOW - 60),
    ]
    never_ban = {"sshd": [ip_network("192.0.2.0/28"), ip_network("198.51.100.5/32")]}
    recovered, stale, protected = unaccounted(elements, [], nothing_ended, NOW, never_ban)
    assert [(d.jail, str(d.network)) for d in recovered] == [("dovecot", "192.0.2.10/32")]
    assert (stale, protected) == (0, 2)
