"""CrowdSec's Local API shapes: Go's durations, a ban as a decision, the bouncers' filters."""

from __future__ import annotations

from ipaddress import ip_network

import pytest

from applianced.decisions.lapi import Filters, QueryError, decision, decision_id, go_duration
from applianced.rules.decision import Ban, BanKind
from applianced.units import MAX_BAN_SECONDS


def ban(address: str, ends: float | None, jail: str = "postfix-sasl", started: float = 0.0) -> Ban:
    return Ban(jail, ip_network(address), started, ends, BanKind.AUTO, 1)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (0.25, "250ms"),
        (1, "1s"),
        (1.5, "1.5s"),
        (60, "1m0s"),
        (3600, "1h0m0s"),
        (4 * 3600 - 1.8, "3h59m58.2s"),
        (90061.125, "25h1m1.125s"),
        (-1.5, "-1.5s"),
        (-3700, "-1h1m40s"),
        (0.0004, "0s"),
    ],
)
def test_go_duration_is_gos_string_form(seconds: float, text: str) -> None:
    assert go_duration(seconds) == text


def test_a_ban_as_a_decision_ip_or_range_with_its_time_left() -> None:
    now = 1000.0
    assert decision(ban("203.0.113.7", now + 3600), now) == {
        "id": decision_id(ban("203.0.113.7", now + 3600)),
        "origin": "applianced",
        "type": "ban",
        "scope": "Ip",
        "value": "203.0.113.7",
        "duration": "1h0m0s",
        "scenario": "postfix-sasl",
    }
    ranged = decision(ban("2001:db8::/64", now + 10), now)
    assert (ranged["scope"], ranged["value"], ranged["duration"]) == (
        "Range",
        "2001:db8::/64",
        "10s",
    )
    assert decision(ban("198.51.100.0/24", None), now)["duration"] == go_duration(MAX_BAN_SECONDS)


def test_a_deleted_decision_has_a_negative_duration() -> None:
    now = 1000.0
    assert decision(ban("203.0.113.7", now - 90), now, deleted=True)["duration"] == "-1m30s"
    # Lifted before its end (unban): ended now.
    assert decision(ban("203.0.113.7", now + 90), now, deleted=True)["duration"] == "-1ms"
    assert decision(ban("203.0.113.7", None), now, deleted=True)["duration"] == "-1ms"


def test_ids_are_stable_positive_and_exact_in_json_numbers() -> None:
    a = ban("203.0.113.7", 50.0, started=10.0)
    assert decision_id(a) == decision_id(ban("203.0.113.7", 50.0, started=10.0))
    assert decision_id(a) != decision_id(ban("203.0.113.7", 60.0, started=20.0))
    assert decision_id(a) != decision_id(ban("203.0.113.7", 50.0, jail="sshd", started=10.0))
    assert 0 < decision_id(a) < 2**53


def test_filters_default_to_ip_and_range_and_read_what_bouncers_send() -> None:
    sasl, sshd = ban("203.0.113.7", None), ban("198.51.100.0/24", None, jail="sshd")
    assert Filters.of({}).admits(sasl) and Filters.of({}).admits(sshd)
    assert not Filters.of({"scopes": ["ip"]}).admits(sshd)
    assert Filters.of({"scopes": ["Ip,Range"]}).admits(sshd)
    assert not Filters.of({"scopes": ["country"]}).admits(sasl)
    assert not Filters.of({"origins": ["crowdsec,cscli"]}).admits(sasl)
    assert Filters.of({"origins": ["cscli,applianced"]}).admits(sasl)
    assert Filters.of({"scenarios_containing": ["sasl,dovecot"]}).admits(sasl)
    assert not Filters.of({"scenarios_containing": ["sasl"]}).admits(sshd)
    assert not Filters.of({"scenarios_not_containing": ["SASL"]}).admits(sasl)
    assert not Filters.of({"type": ["captcha"]}).admits(sasl)


def test_ip_and_range_select_the_decisions_that_contain_them() -> None:
    ranged = ban("198.51.100.0/24", None)
    assert Filters.of({"ip": ["198.51.100.9"]}).admits(ranged)
    assert Filters.of({"range": ["198.51.100.128/25"]}).admits(ranged)
    assert not Filters.of({"range": ["198.51.0.0/16"]}).admits(ranged)
    assert not Filters.of({"ip": ["2001:db8::1"]}).admits(ranged)
    assert Filters.of({"scope": ["range"], "value": ["198.51.100.0/24"]}).admits(ranged)
    with pytest.raises(QueryError, match="ip='nope' is not an address"):
        Filters.of({"ip": ["nope"]})
