"""fail2ban's host tags wherever fail2ban allows them (issue 21): several host tags of which one
matches (``\\[(?:IPv6:<IP6>|<IP4>)\\]``), a host tag in ``prefregex``, the named forms
``<F-IP4>``/``<F-IP6>``/``<F-ADDR>``/``<F-DNS>``, a field captured in two branches, and
``<F-ALT_USER>``; under RE2 and under ``re`` alike, with the prefilter literals still found.
Our own annotated lines; the Debian corpus is the conformance suite's.
"""

from __future__ import annotations

import pytest

from applianced.errors import FilterError
from applianced.rules.filters import Filter, Outcome

ENGINES = ("auto", "re")

# (failregex, prefregex, line, expected host as the daemon bans it, expected user)
CASES = [
    # sendmail-auth's form: one of two host tags in an alternation takes part.
    (
        r"^\S+ \[(?:IPv6:<IP6>|<IP4>)\]: possible SMTP attack",
        None,
        "mx.example [IPv6:2001:db8::5]: possible SMTP attack",
        "2001:db8::5",
        None,
    ),
    (
        r"^\S+ \[(?:IPv6:<IP6>|<IP4>)\]: possible SMTP attack",
        None,
        "mx.example [192.0.2.5]: possible SMTP attack",
        "192.0.2.5",
        None,
    ),
    # Two host groups, each in its own branch; the one that matched decides.
    (
        r"^(?:relay from <HOST>|client <ADDR> rejected)$",
        None,
        "client 198.51.100.3 rejected",
        "198.51.100.3",
        None,
    ),
    # courier-smtp's form: the address is in prefregex, failregex has none.
    (
        r"^550 User unknown",
        r"^error,relay=<HOST>,<F-CONTENT>.+</F-CONTENT>$",
        "error,relay=::ffff:203.0.113.9,550 User unknown.",
        "203.0.113.9",
        None,
    ),
    # The named forms: the operator's own pattern for the address.
    (r"^rip=<F-IP4>[0-9.]+</F-IP4>,", None, "rip=192.0.2.44, lip=x", "192.0.2.44", None),
    (
        r"^from <F-ADDR>[0-9a-f:.]+</F-ADDR> port",
        None,
        "from 2001:db8::1:2 port 22",
        "2001:db8::1:2",
        None,
    ),
    # <F-USER> in two branches, and <F-ALT_USER> as the fallback.
    (
        r"^(?:user <F-USER>\w+</F-USER>|login <F-USER>\w+</F-USER>) from <HOST>",
        None,
        "login grace from 192.0.2.8",
        "192.0.2.8",
        "grace",
    ),
    (
        r"^ruser=<F-ALT_USER>\S*</F-ALT_USER> rhost=<HOST>(?: user=<F-USER>\S+</F-USER>)?$",
        None,
        "ruser=alice rhost=192.0.2.9",
        "192.0.2.9",
        "alice",
    ),
    (
        r"^ruser=<F-ALT_USER>\S*</F-ALT_USER> rhost=<HOST>(?: user=<F-USER>\S+</F-USER>)?$",
        None,
        "ruser=alice rhost=192.0.2.9 user=bob",
        "192.0.2.9",
        "bob",
    ),
]


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize(("failregex", "prefregex", "line", "host", "user"), CASES)
def test_host_tags_where_fail2ban_allows_them(
    engine: str, failregex: str, prefregex: str | None, line: str, host: str, user: str | None
) -> None:
    filt = Filter([failregex], prefregex=prefregex, engine=engine)
    for found in (filt.match(line), filt.examine(line)[1], filt.examine(line, prefilter=True)[1]):
        assert found is not None
        assert str(found.address) == host
        assert found.user == user


def test_two_host_tags_keep_the_prefilter_literal() -> None:
    filt = Filter([r"^\S+ \[(?:IPv6:<IP6>|<IP4>)\]: possible SMTP attack"])
    assert filt.literals == ("]: possible SMTP attack",)
    assert filt.match("mx [192.0.2.5]: something else") is None


def test_an_invalid_address_in_the_branch_taken_is_no_match() -> None:
    filt = Filter([r"^\[(?:IPv6:<IP6>|<IP4>)\]"])
    assert filt.match("[999.1.2.3]") is None
    assert filt.examine("[999.1.2.3]")[0] is Outcome.MISSED


def test_a_hit_whose_host_branch_did_not_take_part_is_no_failure() -> None:
    filt = Filter([r"^(?:from <HOST>|closed)$"])
    assert filt.match("closed") is None
    assert filt.examine("closed")[0] is Outcome.MISSED


def test_cidr_in_the_second_host_tag_reads_its_own_prefix() -> None:
    filt = Filter([r"^(?:host <HOST>|net <CIDR>)$"])
    found = filt.match("net 192.0.2.0/24")
    assert found is not None and found.prefix == 24
    found = filt.match("host 192.0.2.7")
    assert found is not None and found.prefix is None


def test_failregex_without_host_tag_needs_one_in_prefregex() -> None:
    with pytest.raises(FilterError, match="has no <HOST>"):
        Filter([r"^550 User unknown"], prefregex=r"^error,<F-CONTENT>.+</F-CONTENT>$")


def test_failregex_host_wins_over_prefregex_host() -> None:
    filt = Filter([r"^via <HOST>$"], prefregex=r"^from <HOST> <F-CONTENT>.+</F-CONTENT>$")
    found = filt.match("from 192.0.2.1 via 192.0.2.2")
    assert found is not None and str(found.address) == "192.0.2.2"


def test_f_dns_needs_hostnames_allowed() -> None:
    with pytest.raises(FilterError, match="<F-DNS> captures host names"):
        Filter([r"^from <F-DNS>\S+</F-DNS>$"])
    found = Filter([r"^from <F-DNS>\S+</F-DNS>$"], allow_dns=True).match("from mx.example.com")
    assert found is not None and found.host == "mx.example.com" and found.address is None


def test_a_group_edge_is_judged_by_what_is_outside_the_group() -> None:
    """``\\[(?:IPv6:<IP6>|<IP4>)\\]``: the brackets outside the group bound both tags, so the
    regex needs no look-around and runs under RE2; a group whose outside is unknown keeps
    them, so no address is cut out of a longer token."""
    assert Filter([r"^\S+ \[(?:IPv6:<IP6>|<IP4>)\]: possible SMTP attack"]).engine == "re2"
    for regex in (r"(?P<a><HOST>)", r"(?:x|<HOST>)+", r"<F-ID><HOST></F-ID>"):
        assert Filter([regex]).match("x11.2.3.4 2001:db8::1:2z") is None, regex
        found = Filter([regex]).match("at 192.0.2.4.")
        assert found is not None and str(found.address) == "192.0.2.4", regex


@pytest.mark.parametrize(
    ("text", "host"),
    [
        ("from ::ffff:198.51.100.215:60495 x", "198.51.100.215"),  # dropbear: address:port
        ("from ::ffff:198.51.100.215:80 x", "198.51.100.215"),
        ("from 2001:db8::1234:58430 x", "2001:db8::1234"),  # haproxy: 58430 is no hex group
        ("from 2001:db8::1:2 x", "2001:db8::1:2"),
        ("from 2001:db8::1:2g x", None),  # nor is a hex address cut short before ":2"
    ],
)
def test_an_address_may_be_followed_by_a_port_that_cannot_continue_it(
    text: str, host: str | None
) -> None:
    for engine in ENGINES:
        found = Filter([r"^from <HOST>"], engine=engine).match(text)
        assert (None if found is None else str(found.address)) == host


def test_an_optional_ipv6_address_literal_prefix() -> None:
    """sendmail-reject's ``\\[(?:(?:IPv6:)?<IP6>|<IP4>)\\]``: the look-behind stays (the
    group before the tag is optional) and accepts RFC 5321's ``IPv6:``."""
    filt = Filter([r"^\S+ \[(?:(?:IPv6:)?<IP6>|<IP4>)\] did not issue"])
    for text, host in (
        ("a [IPv6:2001:DB8::1] did not issue", "2001:db8::1"),
        ("a [2001:db8::2] did not issue", "2001:db8::2"),
        ("a [192.0.2.3] did not issue", "192.0.2.3"),
    ):
        found = filt.match(text)
        assert found is not None and str(found.address) == host


@pytest.mark.parametrize(
    ("regex", "text", "host"),
    [
        (r"^x <HOST> y$", "x [192.0.2.4] y", "192.0.2.4"),
        (r"^x <ADDR> y$", "x [2001:db8::1] y", "2001:db8::1"),
        (r"^x <HOST> y$", "x [192.0.2.5 y", "192.0.2.5"),  # each bracket optional, as fail2ban
        (r"^from <HOST>(?::\d+)?$", "from [2001:db8::2]:5060", "2001:db8::2"),  # asterisk
        (r"^\((?:TCP:)?<HOST>:\d+\)$", "(TCP:[192.0.2.6]:5060)", "192.0.2.6"),
        (r"^x \[<HOST>\] y$", "x [192.0.2.7] y", "192.0.2.7"),  # the regex's own brackets
        (r"^x <IP4> y$", "x [192.0.2.8] y", None),  # not <IP4>/<IP6> (fail2ban-regex neither)
    ],
)
def test_host_and_addr_take_an_address_in_brackets(regex: str, text: str, host: str | None) -> None:
    """What fail2ban-regex 1.0.2 reports for each line (observed)."""
    for engine in ENGINES:
        found = Filter([regex], engine=engine).match(text)
        assert (None if found is None else str(found.address)) == host
