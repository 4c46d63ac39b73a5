"""Jail windows, eviction, ignore lists and the ban-time policy, on an injected time."""

from __future__ import annotations

from ipaddress import ip_address, ip_network

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from applianced.conf.schema import IncrementConf
from applianced.rules.addresses import network_of
from applianced.rules.decision import BanKind, Offence
from applianced.rules.filters import Filter
from applianced.rules.jail import EVICTED_LINE, Jail, ProgramSelector, ban_duration, decide
from applianced.units import MAX_BAN_SECONDS
from tests.helpers import SSHD_REGEX, jail_conf

A = ip_address("203.0.113.7")


def make(**overrides: object) -> Jail:
    return Jail(jail_conf(**overrides), Filter(SSHD_REGEX, name="sshd"))


def test_bans_at_maxretry_within_findtime() -> None:
    """The maxretry-th failure inside findtime is an offence carrying every line."""
    jail = make()
    assert jail.fail(A, "l1", 0.0) is None
    assert jail.fail(A, "l2", 30.0) is None
    offence = jail.fail(A, "l3", 59.0)
    assert offence is not None
    assert offence.network == ip_network("203.0.113.7/32")
    assert offence.lines == ("l1", "l2", "l3")
    assert offence.failures == 3


def test_failures_older_than_findtime_do_not_count() -> None:
    """A failure exactly findtime old has left the window."""
    jail = make()
    jail.fail(A, "l1", 0.0)
    jail.fail(A, "l2", 1.0)
    assert jail.fail(A, "l3", 60.0) is None  # l1 (t=0) is out: window is (0, 60]
    assert jail.failures(A, 60.0) == 2
    assert jail.fail(A, "l4", 60.5) is not None


def test_window_is_cleared_after_an_offence() -> None:
    """After an offence the next one needs maxretry new failures."""
    jail = make()
    for t in range(3):
        jail.fail(A, "x", float(t))
    assert jail.failures(A, 3.0) == 0
    assert jail.fail(A, "x", 4.0) is None


def test_max_tracked_evicts_the_oldest_and_counts_it() -> None:
    """Memory is bounded: the least recently failing address is forgotten first."""
    jail = make(max_tracked=2)
    b, c = ip_address("203.0.113.8"), ip_address("203.0.113.9")
    jail.fail(A, "x", 0.0)
    jail.fail(b, "x", 1.0)
    jail.fail(A, "x", 2.0)  # A is now the most recent
    jail.fail(c, "x", 3.0)  # evicts b
    assert jail.tracked == 2
    assert jail.stats.evicted == 1
    assert jail.failures(b, 3.0) == 0
    assert jail.failures(A, 3.0) == 2


def _spray(jail: Jail, first: int, count: int, now: float) -> None:
    """``count`` single failures, each from its own /64 of 2001:db8::/32."""
    for n in range(first, first + count):
        jail.fail(ip_address(f"2001:db8:{n >> 16:x}:{n & 0xFFFF:x}::1"), "spray", now)


def test_a_spray_of_single_failures_does_not_wash_out_a_slow_offender() -> None:
    """Issue 15, item 8, scaled down: an address with two failures in its window outlives a
    spray of more distinct single failures than max_tracked, and its third failure bans."""
    jail = make(max_tracked=100)
    jail.fail(A, "l1", 0.0)
    _spray(jail, 0, 50, 5.0)
    jail.fail(A, "l2", 15.0)
    _spray(jail, 50, 250, 20.0)
    assert jail.tracked == 100
    assert jail.stats.evicted == 201
    offence = jail.fail(A, "l3", 30.0)
    assert offence is not None and offence.lines == ("l1", "l2", "l3")


def test_a_spray_larger_than_max_tracked_between_two_failures_does_not_wash_them_out() -> None:
    """Issue 15, item 8, at a tenth of its figures: 900 single failures a second from distinct
    /64s and a slow offender failing every 15 s, so 13,500 new addresses between two of its
    failures, 1.35 times max_tracked as 135,000 is 1.35 times the default 100,000. Its
    evicted window's failure times are kept (a ghost): its second failure finds the first,
    and its third bans."""
    jail = make(max_tracked=10_000, findtime=600.0)
    jail.fail(A, "l1", 0.0)
    _spray(jail, 0, 13_500, 7.5)
    assert jail.failures(A, 7.5) == 0  # its window was evicted
    jail.fail(A, "l2", 15.0)
    assert jail.failures(A, 15.0) == 2
    _spray(jail, 13_500, 13_500, 22.5)
    offence = jail.fail(A, "l3", 30.0)
    assert offence is not None
    assert offence.lines == (EVICTED_LINE, "l2", "l3")


def test_a_ghost_is_forgotten_after_max_tracked_more_evictions_or_findtime() -> None:
    """A ghost outlives max_tracked evictions, not more; an expired one gives nothing back."""
    jail = make(max_tracked=10)
    jail.fail(A, "l1", 0.0)
    _spray(jail, 0, 30, 1.0)  # A is evicted at the 10th; 20 more evictions follow
    jail.fail(A, "l2", 2.0)
    assert jail.failures(A, 2.0) == 1
    expired = make(max_tracked=10)
    expired.fail(A, "l1", 0.0)
    _spray(expired, 0, 11, 1.0)
    expired.fail(A, "l2", 61.0)  # findtime is 60 s
    assert expired.failures(A, 61.0) == 1


def test_a_reload_keeps_the_ghosts() -> None:
    """adopt() takes the ghosts over: a failure after the reload finds the evicted one."""
    old = make(max_tracked=3)
    old.fail(A, "l1", 0.0)
    _spray(old, 0, 3, 1.0)
    new = make(max_tracked=3)
    new.adopt(old)
    new.fail(A, "l2", 2.0)
    assert new.failures(A, 2.0) == 2


def test_single_failures_keep_room_among_many_repeat_offenders() -> None:
    """Addresses with several failures never take more than four fifths of max_tracked: a new
    address can still reach its second failure behind a spray shorter than the rest."""
    jail = make(max_tracked=100)
    for n in range(150):  # 150 addresses with two failures each
        address = ip_address(f"192.0.2.{n}")
        jail.fail(address, "x", 0.0)
        jail.fail(address, "x", 1.0)
    assert jail.tracked == 100
    jail.fail(A, "l1", 2.0)
    _spray(jail, 0, 18, 3.0)
    jail.fail(A, "l2", 4.0)
    assert jail.failures(A, 4.0) == 2
    assert jail.tracked == 100


def test_an_address_whose_failures_expired_counts_as_new_again() -> None:
    """A repeat offender whose window has emptied is one failure again, first to be evicted."""
    jail = make(max_tracked=3)
    jail.fail(A, "x", 0.0)
    jail.fail(A, "x", 1.0)
    jail.fail(A, "x", 100.0)  # findtime is 60 s: the first two are gone
    _spray(jail, 0, 3, 101.0)
    assert jail.failures(A, 101.0) == 0
    assert jail.stats.evicted == 1


def test_a_reload_to_a_smaller_max_tracked_keeps_the_repeat_offenders() -> None:
    """adopt() evicts as fail() does: single failures first, however old the others are."""
    old = make()
    old.fail(A, "l1", 0.0)
    old.fail(A, "l2", 1.0)
    _spray(old, 0, 5, 2.0)
    new = make(max_tracked=3)
    new.adopt(old)
    assert new.tracked == 3 and new.stats.evicted == 3
    offence = new.fail(A, "l3", 3.0)
    assert offence is not None and offence.lines == ("l1", "l2", "l3")


@settings(max_examples=300)
@given(
    st.integers(1, 6),
    st.lists(st.tuples(st.integers(0, 9), st.floats(0.0, 40.0)), max_size=60),
)
def test_windows_stay_within_bounds_and_every_eviction_is_counted(
    max_tracked: int, failures: list[tuple[int, float]]
) -> None:
    """Whatever the failures: at most max_tracked windows, the protected ones (two failures or
    more; probation also holds those demoted) at most four fifths of it, and each window that
    vanished without an offence counted as evicted."""
    jail = make(max_tracked=max_tracked)
    now, opened, offences = 0.0, 0, 0
    for n, step in failures:
        now += step
        address = ip_address(f"203.0.113.{n}")
        opened += not jail.recent_lines(address)  # no window yet: this failure opens one
        offences += jail.fail(address, "x", now) is not None
    probation, protected = jail._probation, jail._protected
    assert len(probation) + len(protected) == jail.tracked <= max_tracked
    assert len(protected) <= max_tracked * 4 // 5
    assert all(len(w) >= 2 for w in protected.values())
    assert jail.stats.evicted == opened - offences - jail.tracked


def test_ignored_addresses_never_offend() -> None:
    """ignoreip and the never-ban list (senders, own addresses) are counted, not tracked."""
    jail = Jail(
        jail_conf(ignoreip=(ip_network("203.0.113.0/24"),)),
        Filter(SSHD_REGEX),
        never_ban=[ip_network("127.0.0.0/8")],
    )
    for t in range(10):
        assert jail.fail(A, "x", float(t)) is None
        assert jail.fail(ip_address("127.0.0.1"), "x", float(t)) is None
    assert jail.stats.ignored == 20
    assert jail.tracked == 0


def test_ipv6_failures_are_counted_per_prefix() -> None:
    """Addresses of one /64 share a window and the ban covers the /64."""
    jail = make()
    offence = None
    for i in range(1, 4):
        offence = jail.fail(ip_address(f"2001:db8::{i}"), "x", float(i))
    assert offence is not None
    assert offence.network == ip_network("2001:db8::/64")


def test_ipv6_prefix_ban_shrinks_to_the_host_when_it_would_cover_an_ignored_address() -> None:
    """Never ban the wrong address: a /64 holding an ignored address bans only the host."""
    jail = make(ignoreip=(ip_network("2001:db8::1/128"),))
    offence = None
    for t in range(3):
        offence = jail.fail(ip_address("2001:db8::2"), "x", float(t))
    assert offence is not None
    assert offence.network == ip_network("2001:db8::2/128")


def test_network_of_keeps_ipv4_hosts() -> None:
    """IPv4 bans are single addresses whatever the IPv6 prefix."""
    assert network_of(A, 64) == ip_network("203.0.113.7/32")
    assert network_of(ip_address("2001:db8::5"), 128) == ip_network("2001:db8::5/128")


@pytest.mark.parametrize(
    ("prior", "expected"), [(0, 100.0), (1, 200.0), (2, 400.0), (3, 800.0), (4, 1000.0)]
)
def test_ban_duration_escalates_and_is_capped(prior: int, expected: float) -> None:
    """bantime * factor**prior, never above maxtime."""
    assert ban_duration(100.0, 2.0, prior, 1000.0) == expected


def test_decide_makes_the_max_count_th_ban_permanent() -> None:
    """With max_count=3 the third ban is a blacklist entry."""
    conf = jail_conf(max_count=3)
    jail = Jail(conf, Filter(SSHD_REGEX))
    offence = None
    for t in range(3):
        offence = jail.fail(A, "x", float(t))
    assert offence is not None
    second = decide(conf, offence, prior=1)
    assert (second.kind, second.duration, second.count) == (BanKind.AUTO, 200.0, 2)
    third = decide(conf, offence, prior=2)
    assert (third.kind, third.duration, third.count) == (BanKind.BLACKLIST, None, 3)


def test_decide_without_increment_uses_bantime() -> None:
    """bantime_increment disabled: every ban lasts bantime."""
    conf = jail_conf(bantime_increment=IncrementConf(False, 2.0, 1000.0))
    offence = Offence("sshd", ip_network(A), A, 3, ("x",), 0.0)
    assert decide(conf, offence, prior=5).duration == 100.0


def test_program_selector_takes_names_and_globs() -> None:
    """Exact app-names and fnmatch globs select; an empty selector takes everything."""
    sel = ProgramSelector(["sshd", "postfix/*"])
    assert sel("sshd") and sel("postfix/smtpd") and sel("postfix/submission/smtpd")
    assert not sel("dovecot") and not sel(None)
    assert ProgramSelector([])(None)


def test_adopt_keeps_windows_across_a_reload() -> None:
    """A reloaded jail keeps the failures counted so far."""
    old = make()
    old.fail(A, "x", 0.0)
    old.fail(A, "x", 1.0)
    new = make(bantime=500.0)
    new.adopt(old)
    assert new.fail(A, "x", 2.0) is not None


def test_a_captured_network_is_banned_whole_unless_it_covers_a_protected_address() -> None:
    """<CIDR>/<SUBNET> failures ban the network; one holding an ignored address bans the host."""
    jail = make()
    offence = None
    for t in range(3):
        offence = jail.fail(ip_address("203.0.113.5"), "x", float(t), prefix=24)
    assert offence is not None and offence.network == ip_network("203.0.113.0/24")
    guarded = make(ignoreip=(ip_network("203.0.113.9/32"),))
    for t in range(3):
        offence = guarded.fail(ip_address("203.0.113.5"), "x", float(t), prefix=24)
    assert offence is not None and offence.network == ip_network("203.0.113.5/32")


def test_a_captured_network_does_not_hide_an_ignored_address() -> None:
    """The ignore check applies to the captured address itself, not only its network."""
    jail = make(ignoreip=(ip_network("203.0.113.5/32"),))
    for t in range(5):
        assert jail.fail(ip_address("203.0.113.5"), "x", float(t), prefix=24) is None
    assert jail.stats.ignored == 5


def test_an_escalated_ban_never_outlasts_what_the_kernel_takes() -> None:
    """Computed durations are capped at MAX_BAN_SECONDS: a factor's product that overflows a
    float (10**400), and a jitter on top of the longest bantime."""
    offence = Offence("sshd", ip_network(A), A, 3, ("x",), 0.0)
    huge = jail_conf(bantime_increment=IncrementConf(True, 10.0, MAX_BAN_SECONDS))
    assert decide(huge, offence, prior=400).duration == MAX_BAN_SECONDS
    longest = jail_conf(bantime=MAX_BAN_SECONDS, bantime_jitter=3600.0)
    assert decide(longest, offence, prior=0, jitter=1800.0).duration == MAX_BAN_SECONDS
    assert decide(jail_conf(), offence, prior=0, jitter=5.0).duration == 105.0


NAT64 = "64:ff9b::c633:64{:02x}"  # 198.51.100.N behind a NAT64 translator (RFC 6052)


@pytest.mark.parametrize("template", [NAT64, "64:ff9b:1::c633:64{:02x}", "2001:0:c000:201::{:x}"])
def test_an_address_standing_for_an_ipv4_host_is_counted_and_banned_alone(template: str) -> None:
    """NAT64 (64:ff9b::/96, 64:ff9b:1::/48) and Teredo (2001::/32) addresses each stand for
    one IPv4 host: their /64 covers every host behind the translator, so failures of
    neighbours are not summed and the ban is the address itself."""
    jail = make()
    for i in (1, 2, 3):
        assert jail.fail(ip_address(template.format(i)), "x", float(i)) is None
    offence = None
    for t in (4.0, 5.0, 6.0):
        offence = jail.fail(ip_address(template.format(200)), "x", t)
    assert offence is not None
    assert offence.network == ip_network(template.format(200))
    assert jail.failures(ip_address(template.format(1)), 6.0) == 1
