"""adopted(): which of the cluster's bans start here and which of ours they lift; pure, on a
plain dict of active bans (Appliance.adopt's wiring is tested in tests/cluster/test_adopt.py)."""

from __future__ import annotations

from ipaddress import ip_network

from applianced.adoption import adopted
from applianced.rules.decision import Ban, BanKind, IPNetwork
from applianced.units import MAX_BAN_SECONDS

NOW = 1_800_000_000.0
NET = ip_network("198.51.100.7/32")
OTHER = ip_network("198.51.100.8/32")


def ban(
    start: float, jail: str = "sshd", net: IPNetwork = NET, expires: float | None = None
) -> Ban:
    return Ban(jail, net, start, start + 600 if expires is None else expires, BanKind.AUTO, 1)


def test_a_new_ban_starts_a_ban_of_a_disabled_jail_does_not() -> None:
    fresh, lifted = adopted({}, [ban(NOW), ban(NOW, jail="gone")], [], {"sshd"}, NOW)
    assert fresh == [ban(NOW)] and lifted == []


def test_an_older_ban_does_not_replace_a_newer_one() -> None:
    active = {("sshd", NET): ban(NOW)}
    assert adopted(active, [ban(NOW - 10)], [], {"sshd"}, NOW) == ([], [])
    assert adopted(active, [ban(NOW + 10)], [], {"sshd"}, NOW) == ([ban(NOW + 10)], [])


def test_an_end_lifts_only_the_same_ban() -> None:
    current = ban(NOW)
    active = {("sshd", NET): current}
    assert adopted(active, [], [ban(NOW - 5)], {"sshd"}, NOW) == ([], [])
    assert adopted(active, [], [ban(NOW)], {"sshd"}, NOW) == ([], [current])
    assert adopted(active, [], [ban(NOW, net=OTHER)], {"sshd"}, NOW) == ([], [])


def test_a_lifted_ban_gives_way_to_an_older_one_of_the_same_batch() -> None:
    active = {("sshd", NET): ban(NOW)}
    fresh, lifted = adopted(active, [ban(NOW - 10)], [ban(NOW)], {"sshd"}, NOW)
    assert fresh == [ban(NOW - 10)] and lifted == [ban(NOW)]


def test_bans_of_one_batch_compare_with_each_other_in_order() -> None:
    fresh, _ = adopted({}, [ban(NOW), ban(NOW - 10), ban(NOW + 10)], [], {"sshd"}, NOW)
    assert fresh == [ban(NOW), ban(NOW + 10)]


def test_an_expiry_beyond_the_cap_is_cut_a_permanent_ban_stays() -> None:
    far = ban(NOW, expires=NOW + 2 * MAX_BAN_SECONDS)
    permanent = Ban("sshd", OTHER, NOW, None, BanKind.BLACKLIST, 1)
    fresh, _ = adopted({}, [far, permanent], [], {"sshd"}, NOW)
    assert fresh[0].expires_at == NOW + MAX_BAN_SECONDS
    assert fresh[1] == permanent
