"""``rules/explain.py``: one message's walk through the jails, each verdict and the steps that
say it, and that the walk counts nothing."""

from __future__ import annotations

from ipaddress import ip_network

from applianced.rules.explain import Explanation, explain
from applianced.rules.filters import Filter
from applianced.rules.jail import Jail, jail_filter
from applianced.rules.message import SyslogMessage
from tests.helpers import SSHD_REGEX, jail_conf, message, ssh_failure

AUTH = (
    r"^auth failed for <F-USER>\S+</F-USER> from <HOST>(?: session (?P<session>\w+))?"
    r"(?: <F-NOFAIL>trusted</F-NOFAIL>)?$"
)


def _walk(msg: SyslogMessage, *jails: Jail) -> Explanation:
    return explain(msg, "RFC 3164", {"msg": msg.msg}, jails)


def _sshd(**overrides: object) -> Jail:
    conf = jail_conf(**overrides)
    return Jail(conf, jail_filter(conf))


def _auth(ignoreregex: tuple[str, ...] = (), **overrides: object) -> Jail:
    conf = jail_conf("auth", programs=("auth",), failregex=(AUTH,), **overrides)
    filt = Filter([AUTH], ignoreregex, allow_dns=conf.use_dns)
    return Jail(conf, filt)


def test_a_failure_names_the_regex_and_what_it_took() -> None:
    jail = _auth()
    walk = _walk(message("auth failed for bob from 203.0.113.7 session ab12", app="auth"), jail)
    (auth,) = walk.jails
    assert auth.verdict == "failure" and walk.summary == "a failure for auth"
    assert [t.result for t in auth.failregex] == ["matched"]
    assert auth.match == {
        "host": "203.0.113.7",
        "address": "203.0.113.7",
        "user": "bob",
        "fields": {"session": "ab12"},
        "prefix": None,
    }
    assert auth.steps[-1] == "a failure of 203.0.113.7: 3 within 60 s ban it"
    assert jail.stats.matched == 0 and jail.tracked == 0  # nothing counted


def test_a_program_no_jail_reads_is_unread_everywhere() -> None:
    walk = _walk(message("x", app="postfix/qmgr"), _sshd(), _auth())
    assert [w.verdict for w in walk.jails] == ["unread", "unread"]
    assert walk.jails[0].steps == ("reads sshd; the message's program is 'postfix/qmgr'",)
    assert walk.summary == "no jail reads it ('postfix/qmgr'): counted as gated_unread"


def test_a_jail_of_other_senders_does_not_read_it() -> None:
    jail = _sshd(senders=(ip_network("192.0.2.0/24"),))
    walk = _walk(message(ssh_failure("203.0.113.7"), sender="198.51.100.1"), jail)
    assert walk.jails[0].verdict == "unread"
    assert "reads only senders 192.0.2.0/24, not 198.51.100.1" in walk.jails[0].steps


def test_a_text_without_any_prefilter_literal_runs_no_regex() -> None:
    walk = _walk(message("Accepted publickey for bob"), _sshd())
    assert walk.jails[0].verdict == "no literal" and walk.jails[0].failregex == ()
    assert "prefilter literals 'Failed '" in walk.jails[0].steps[-1]
    assert walk.summary == "read by sshd, none of their literals in it: counted as gated_no_literal"


def test_every_failregex_tried_and_none_matched() -> None:
    jail = Jail(jail_conf(), Filter([*SSHD_REGEX, r"^Failed \S+ at <HOST>$"]))
    walk = _walk(message("Failed none for bob"), jail)
    assert walk.jails[0].verdict == "missed"
    assert [t.result for t in walk.jails[0].failregex] == ["not matched", "not matched"]
    assert walk.jails[0].steps[-1] == "none of its 2 failregexes matched"


def test_the_ignoreregex_that_overrode_the_failure_is_named() -> None:
    walk = _walk(
        message("auth failed for monitor from 203.0.113.7", app="auth"),
        _auth(ignoreregex=(r"for nagios ", r"for monitor ")),
    )
    (auth,) = walk.jails
    assert auth.verdict == "ignored"
    assert [t.result for t in auth.ignoreregex] == ["not matched", "matched"]
    assert auth.steps[-1] == "ignoreregex #2 matched: not a failure"
    assert auth.match is not None and auth.match["user"] == "monitor"


def test_a_nofail_group_makes_the_match_no_failure() -> None:
    walk = _walk(message("auth failed for bob from 203.0.113.7 trusted", app="auth"), _auth())
    assert walk.jails[0].verdict == "ignored"
    assert walk.jails[0].steps[-1] == "its <F-NOFAIL> group matched: not a failure"


def test_an_address_the_jail_never_bans_names_the_network() -> None:
    jail = _sshd(ignoreip=(ip_network("203.0.113.0/24"),))
    walk = _walk(message(ssh_failure("203.0.113.7")), jail)
    assert walk.jails[0].verdict == "never ban"
    assert "203.0.113.7 is in 203.0.113.0/24, never banned" in walk.jails[0].steps[-1]
    assert walk.summary == "a failure of an address sshd never bans: counted as ignored"


def test_a_hostname_is_left_to_the_daemon_s_lookup() -> None:
    walk = _walk(message("auth failed for bob from mx.example.org", app="auth"),
                 _auth(use_dns=True))  # fmt: skip
    assert walk.jails[0].verdict == "lookup" and walk.summary == "a failure for auth"


def test_the_failregexes_after_the_one_that_matched_are_not_tried() -> None:
    jail = Jail(
        jail_conf(), Filter([r"^Bad \S+ at <HOST>$", *SSHD_REGEX, r"^Failed \S+ at <HOST>$"])
    )
    walk = _walk(message(ssh_failure("203.0.113.7")), jail)
    results = [t.result for t in walk.jails[0].failregex]
    assert results == ["not matched", "matched", "not tried"]


def test_as_json_is_plain_data() -> None:
    walk = _walk(message(ssh_failure("203.0.113.7")), _sshd())
    data = walk.as_json()
    assert data["jails"][0]["failregex"][0] == {
        "number": 1,
        "regex": data["jails"][0]["failregex"][0]["regex"],
        "result": "matched",
    }
    assert data["summary"] == "a failure for sshd" and data["shape"] == "RFC 3164"


def test_a_multi_line_hit_without_an_address_needs_the_lines_before_it() -> None:
    """sshd's "Too many authentication failures" names no address: the daemon counts it only
    for the address an earlier line of the connection named. Explain reads one line: it says
    so, and calls it no failure, not a hostname to resolve."""
    filt = Filter(
        [r"^Disconnecting: Too many authentication failures(?: for <F-USER>\S+</F-USER>)?"],
        prefregex=r"^<F-MLFID> \S+ sshd\[\d+\]: </F-MLFID><F-CONTENT>.+</F-CONTENT>$",
        on_line=True,
    )
    jail = Jail(jail_conf(), filt)
    walk = _walk(message("Disconnecting: Too many authentication failures for root"), jail)
    (sshd,) = walk.jails
    assert sshd.verdict == "no address"
    assert "an earlier line of its connection" in sshd.steps[-1]
    assert walk.summary == (
        "read by sshd, a failure only with the address an earlier line named "
        "(explain reads one line)"
    )
