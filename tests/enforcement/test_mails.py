"""Ban mails built (enforcement/mails.py): ordinals, a ban's mail, its whois parts."""

from __future__ import annotations

import email
from dataclasses import replace
from pathlib import Path

from applianced.enforcement.mails import Pending, build_ban_mail, build_digest, ordinal
from applianced.enforcement.whois import WhoisAnswer
from tests.enforcement.test_notify import NOTIFY, T0, ban, body


def test_ordinals() -> None:
    """1st 2nd 3rd 4th 11th 12th 13th 21st 102nd."""
    assert [ordinal(n) for n in (1, 2, 3, 4, 11, 12, 13, 21, 102)] == [
        "1st", "2nd", "3rd", "4th", "11th", "12th", "13th", "21st", "102nd",
    ]  # fmt: skip


def test_ban_mail_content_and_headers(tmp_path: Path) -> None:
    """Subject, Date, Message-ID, Auto-Submitted, UTF-8 text with whois summary and lines."""
    answer = WhoisAnswer(
        "whois.ripe.net",
        "inetnum: 203.0.113.0 - 203.0.113.255\nnetname: EXAMPLE-NET\n ~x",
        "EXAMPLE-NET",
        "NL",
        "abuse@example.net",
    )
    lines = tuple(
        f"[127.0.0.1] mx sshd[1]: Failed password for \u00e9lodie #{i}" for i in range(30)
    )
    conf = replace(NOTIFY, max_lines=5, reverse_dns=True)
    msg = build_ban_mail(conf, ban(count=3), lines, ("mail-whois-lines",), answer, "h.example", T0)
    assert msg["Subject"] == "[applianced] sshd: banned 203.0.113.7 (3rd ban, 1h)"
    assert msg["Auto-Submitted"] == "auto-generated"
    assert msg["From"] == "appliance@example.org" and msg["To"] == "admin@example.org"
    assert msg["Message-ID"].endswith("@example.org>") and msg["Date"]
    assert msg.get_content_type() == "text/plain" and msg.get_content_charset() == "utf-8"
    parsed = email.message_from_bytes(msg.as_bytes(), policy=email.policy.default)
    text = body(parsed)  # type: ignore[arg-type]
    assert "netname:  EXAMPLE-NET" in text and "country:  NL" in text
    assert "abuse:    abuse@example.net" in text and "Reverse DNS:  h.example" in text
    assert "Matched lines (5 of 30" in text and "\u00e9lodie #29" in text and "#24" not in text
    assert "Expires:      2027-01-15 09:00:00 UTC" in text
    assert "\n   ~x" in text  # a raw whois line starting with ~ is indented by one more space


def test_mail_without_whois_or_lines_and_whois_failure_text(tmp_path: Path) -> None:
    """`mail` has neither whois nor lines; a failed lookup reads 'whois unavailable: why'."""
    plain = body(build_ban_mail(NOTIFY, ban(), ("x",), ("mail",), None, None, T0))
    assert "Whois" not in plain and "Matched lines" not in plain and "Reverse DNS" not in plain
    failed = build_ban_mail(
        NOTIFY, ban(duration=None), (), ("mail-whois",), "whois unavailable: timeout", None, T0
    )
    assert "Whois: whois unavailable: timeout" in body(failed)
    assert "(1st ban, permanent)" in failed["Subject"]


def test_a_digest_counts_in_the_singular_when_one() -> None:
    one = [Pending(ban(), (), ("mail",))]
    msg = build_digest(NOTIFY, one, dropped=1, now=T0)
    assert msg["Subject"] == "[applianced] digest: 1 ban in sshd"
    text = body(msg)
    assert ": 1 ban reported together" in text and "1 more ban was not reported" in text
