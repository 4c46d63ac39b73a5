"""The book of active bans: one per (jail, network), expiries in order, stale entries skipped."""

from __future__ import annotations

from ipaddress import ip_network

from applianced.bans import BanBook
from applianced.rules.decision import Ban, BanKind, Offence


def ban(address: str, ends: float | None, jail: str = "sshd", started: float = 0.0) -> Ban:
    return Ban(jail, ip_network(address), started, ends, BanKind.AUTO, 1)


def test_due_returns_the_bans_that_ended_in_order_and_removes_them() -> None:
    book = BanBook()
    book.reset([ban("192.0.2.1", 30.0), ban("192.0.2.2", 10.0), ban("192.0.2.3", None)])
    assert book.next_expiry() == 10.0
    assert book.due(9.9) == []
    assert [str(b.network) for b in book.due(30.0)] == ["192.0.2.2/32", "192.0.2.1/32"]
    assert [str(n) for _, n in book] == ["192.0.2.3/32"]
    assert book.next_expiry() is None


def test_a_replaced_or_lifted_ban_does_not_expire_by_its_old_entry() -> None:
    book = BanBook()
    book.add([ban("192.0.2.1", 10.0)])
    longer = ban("192.0.2.1", 50.0, started=5.0)
    book.add([longer, ban("192.0.2.2", 10.0)])
    book.lift([book[("sshd", ip_network("192.0.2.2/32"))]])
    assert book.due(10.0) == []
    assert book.due(50.0) == [longer]
    assert len(book) == 0


def test_keep_jails_forgets_removed_jails_and_of_jail_filters() -> None:
    book = BanBook()
    book.reset([ban("192.0.2.1", 10.0), ban("192.0.2.1", 10.0, jail="postfix")])
    assert [b.jail for b in book.of_jail("postfix")] == ["postfix"]
    book.keep_jails(["postfix"])
    assert [b.jail for b in book.of_jail(None)] == ["postfix"]
    assert book.due(10.0) == [ban("192.0.2.1", 10.0, jail="postfix")]


def offence(address: str, jail: str = "sshd") -> Offence:
    net = ip_network(address)
    return Offence(jail, net, net.network_address, 3, (), 0.0)


def test_unbanned_keeps_the_first_offence_of_each_network_not_banned_by_jail() -> None:
    book = BanBook()
    book.reset([ban("192.0.2.1", 30.0)])
    offences = [
        offence("192.0.2.1"),  # banned already
        offence("192.0.2.2"),
        offence("192.0.2.2"),  # the same network again this turn
        offence("192.0.2.3", jail="gone"),  # a jail no longer enabled
        offence("192.0.2.4", jail="web"),
        offence("192.0.2.5"),
    ]
    by_jail, skipped = book.unbanned(offences, {"sshd", "web"})
    assert by_jail == {"sshd": [offences[1], offences[5]], "web": [offences[4]]}
    assert skipped == 3


def test_overlapping_finds_the_bans_an_unban_covers() -> None:
    book = BanBook()
    wide = ban("192.0.2.0/24", None)
    narrow = ban("192.0.2.7", 30.0, jail="web")
    v6 = ban("2001:db8::1", 30.0)
    book.reset([wide, narrow, ban("198.51.100.1", 30.0), v6])
    assert book.overlapping(ip_network("192.0.2.7/32"), None, False) == [wide, narrow]
    assert book.overlapping(ip_network("192.0.2.7/32"), "web", False) == [narrow]
    assert book.overlapping(ip_network("192.0.2.0/25"), None, True) == [wide]
    assert book.overlapping(ip_network("::/0"), None, False) == [v6]


def test_every_start_and_end_is_in_the_change_log() -> None:
    """What the decision stream reads: add (a replaced ban ends first), lift, due, a reload's
    removed jail; a restore starts the log over."""
    book = BanBook()
    first, longer = ban("192.0.2.1", 10.0), ban("192.0.2.1", 50.0, started=5.0)
    other = ban("192.0.2.2", None, jail="web")
    book.add([first])
    book.add([longer, other])
    book.lift([longer])
    due = ban("192.0.2.3", 30.0)
    book.add([due])
    assert book.due(30.0) == [due]
    book.keep_jails(["sshd"])
    assert book.changes.since(0) == [
        (first, True),
        (first, False),
        (longer, True),
        (other, True),
        (longer, False),
        (due, True),
        (due, False),
        (other, False),
    ]
    head = book.changes.head
    book.reset([first])
    assert book.changes.since(head) is None
    assert book.changes.since(book.changes.head) == []
