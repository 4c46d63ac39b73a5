"""The whois client: sanitising, referral parsing, summaries, the per-network cache and the
timeout (task.Clock and a scripted Query; the real TCP path is in tests/e2e/test_mail.py)."""

from __future__ import annotations

from ipaddress import ip_address, ip_network

import pytest
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from applianced.enforcement.whois import (
    WhoisAnswer,
    WhoisClient,
    WhoisError,
    _Answer,
    parse_answer,
    referral,
    sanitise,
)

IANA = """\
% IANA WHOIS server
refer:        whois.ripe.net

inetnum:      203.0.0.0 - 203.255.255.255
whois:        whois.ripe.net
"""

RIPE = """\
% Abuse contact for '203.0.113.0 - 203.0.113.255' is 'abuse@example.net'

inetnum:        203.0.113.0 - 203.0.113.255
netname:        EXAMPLE-NET
country:        NL
"""

ARIN = """\
NetRange:       198.51.100.0 - 198.51.100.255
CIDR:           198.51.100.0/24
NetName:        DOC-NET
Country:        US
OrgAbuseEmail:  abuse@doc.example
ReferralServer: whois://whois.lacnic.net
"""


def test_sanitise_control_chars_tilde_and_dot_lines() -> None:
    """Control characters become '?', ~ and . lines are indented, long lines cut."""
    text = "ok\x1b[31mred\r\n~! rm -rf\n.\n.hidden\tx\n" + "y" * 600
    out = sanitise(text).splitlines()
    assert out[0] == "ok?[31mred"
    assert out[1:4] == [" ~! rm -rf", " .", " .hidden    x"]
    assert out[4].endswith(" [...]") and len(out[4]) == 506


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (IANA, "whois.ripe.net"),
        ("ReferralServer: whois://whois.apnic.net:43/", "whois.apnic.net:43"),
        ("ReferralServer: rwhois://rwhois.example:4321", None),
        ("refer: evil; touch /tmp/x", None),
        (RIPE, None),
    ],
)
def test_referral(text: str, expected: str | None) -> None:
    """IANA's refer:, ARIN's ReferralServer whois://; anything not a host name is ignored."""
    assert referral(text) == expected


def test_parse_ripe_and_arin_answers() -> None:
    """netname, country, abuse contact and the covered networks from both styles."""
    ripe = parse_answer("whois.ripe.net", RIPE)
    assert (ripe.netname, ripe.country, ripe.abuse) == ("EXAMPLE-NET", "NL", "abuse@example.net")
    assert ripe.networks == (ip_network("203.0.113.0/24"),)
    arin = parse_answer("whois.arin.net", ARIN)
    assert (arin.netname, arin.country, arin.abuse) == ("DOC-NET", "US", "abuse@doc.example")
    assert arin.networks == (ip_network("198.51.100.0/24"),)


class Script:
    """A Query that answers from a dict keyed by (host, port)."""

    def __init__(self, answers: dict[tuple[str, int], str | Deferred[bytes]]) -> None:
        self.answers = answers
        self.asked: list[tuple[str, int, str]] = []

    def __call__(self, host: str, port: int, text: str) -> Deferred[bytes]:
        self.asked.append((host, port, text))
        answer = self.answers.get((host, port))
        if answer is None:
            return fail(ConnectionRefusedError(f"{host}:{port} refused"))
        return answer if isinstance(answer, Deferred) else succeed(answer.encode())


def result(d: Deferred[WhoisAnswer]) -> WhoisAnswer | Exception:
    out: list[WhoisAnswer | Exception] = []
    d.addCallbacks(out.append, lambda f: out.append(f.value))
    return out[0]


def test_referral_is_followed_through_the_configured_server_map() -> None:
    """IANA refers to whois.ripe.net, which the server map sends to a local port."""
    script = Script({("127.0.0.1", 4300): IANA, ("127.0.0.1", 4301): RIPE})
    client = WhoisClient(Clock(), script, "127.0.0.1:4300", {"whois.ripe.net": "127.0.0.1:4301"})
    answer = result(client.lookup(ip_address("203.0.113.7")))
    assert isinstance(answer, WhoisAnswer)
    assert answer.server == "whois.ripe.net" and answer.netname == "EXAMPLE-NET"
    assert [a[:2] for a in script.asked] == [("127.0.0.1", 4300), ("127.0.0.1", 4301)]
    assert script.asked[0][2] == "203.0.113.7"


def test_failed_referral_falls_back_to_the_referring_answer() -> None:
    """When the registry is unreachable, IANA's own answer is used."""
    script = Script({("whois.iana.org", 43): IANA})
    answer = result(WhoisClient(Clock(), script).lookup(ip_address("203.0.113.7")))
    assert isinstance(answer, WhoisAnswer) and answer.server == "whois.iana.org"


def test_cache_per_network_for_a_day() -> None:
    """A second address in the same inetnum is answered from the cache until it expires."""
    clock = Clock()
    script = Script({("whois.iana.org", 43): IANA, ("whois.ripe.net", 43): RIPE})
    client = WhoisClient(clock, script, cache_for=86400)
    result(client.lookup(ip_address("203.0.113.7")))
    result(client.lookup(ip_address("203.0.113.200")))
    assert len(script.asked) == 2 and client.cache_hits == 1
    result(client.lookup(ip_address("203.0.114.1")))  # outside the /24: asked again
    assert len(script.asked) == 4
    clock.advance(86401)
    result(client.lookup(ip_address("203.0.113.7")))
    assert len(script.asked) == 6


def test_a_hanging_server_times_out_with_a_reason() -> None:
    """No answer within the timeout fails the lookup (and cancels the query)."""
    clock = Clock()
    hang: Deferred[bytes] = Deferred()
    client = WhoisClient(clock, Script({("whois.iana.org", 43): hang}), timeout=3)
    out: list[object] = []
    client.lookup(ip_address("203.0.113.7")).addErrback(lambda f: out.append(f.value))
    clock.advance(2.9)
    assert out == []
    clock.advance(0.2)
    assert isinstance(out[0], WhoisError) and str(out[0]) == "no answer within 3s"
    assert hang.called  # cancelled
    assert client.failures == 1


def test_refused_connection_is_a_whois_error() -> None:
    """A refused connection fails with the reason."""
    out = result(WhoisClient(Clock(), Script({})).lookup(ip_address("203.0.113.7")))
    assert isinstance(out, WhoisError) and "refused" in str(out)


def test_protocol_sends_the_query_and_collects_until_close() -> None:
    """RFC 3912: one line out, everything until the server closes; the size is capped."""
    proto = _Answer("203.0.113.7")
    transport = StringTransport()
    proto.makeConnection(transport)
    assert transport.value() == b"203.0.113.7\r\n"
    proto.dataReceived(b"netname: X\n")
    proto.dataReceived(b"x" * (80 * 1024))
    proto.connectionLost()
    got: list[bytes] = []
    proto.done.addCallback(got.append)
    assert got[0].startswith(b"netname: X\n") and len(got[0]) <= 80 * 1024 + 11
