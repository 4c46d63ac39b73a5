"""Tests for applianced.rules.filters: tags, the prefilter, errors, and the shipped filters' matches
(reading filter files is tests/conf/filterfiles/test_native.py's).

The shipped filters are checked against every row of tests/data/mail-lines.tsv and against the
extra rows below (sibling messages of the same services, and more injection attempts). Addresses
are RFC 5737 / 2001:db8:: only; 198.51.100.99 is the decoy an attacker writes into text it
controls, which no filter may ever report.
"""

# ruff: noqa: E501  (log lines are data and stay whole)
from __future__ import annotations

import functools
import ipaddress
import re
from datetime import UTC, datetime
from fnmatch import fnmatchcase
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from applianced.conf.filterfiles.native import (
    shipped_filter,
    shipped_filter_names,
    shipped_filters_dir,
)
from applianced.errors import FilterError
from applianced.receiver.parse import parse
from applianced.rules.filters import Filter, Match, Outcome

CORPUS = Path(__file__).resolve().parent.parent / "data" / "mail-lines.tsv"
DECOY = ipaddress.ip_address("198.51.100.99")
REF = datetime(2026, 11, 22, 12, 0, 0, tzinfo=UTC)

# A file line: "Mmm dd hh:mm:ss HOST PROGRAM[PID]: MSG". The parser module owns the real thing.
LOG_LINE = re.compile(r"^\w{3} [ \d]\d \d\d:\d\d:\d\d \S+ ([^:\[\s]+)(?:\[\d+\])?: ?(.*)$")

# Sibling messages of the corpus formats, and more injection attempts: (service, expected, line).
EXTRA_ROWS: list[tuple[str, str, str]] = [
    # postfix: other mechanisms and services, Postfix 3.x sasl_username, IPv4-mapped clients
    (
        "postfix-sasl",
        "192.0.2.101",
        "Nov 22 11:00:01 mx postfix/smtps/smtpd[3001]: warning: unknown[192.0.2.101]: SASL CRAM-MD5 authentication failed: authentication failure",
    ),
    (
        "postfix-sasl",
        "203.0.113.101",
        "Nov 22 11:00:02 mx postfix/submission/smtpd[3002]: warning: host.example.net[203.0.113.101]: SASL LOGIN authentication failed: UGFzc3dvcmQ6, sasl_username=admin@example.org",
    ),
    (
        "postfix-sasl",
        "192.0.2.103",
        "Nov 22 11:00:03 mx postfix/smtpd[3003]: warning: unknown[::ffff:192.0.2.103]: SASL PLAIN authentication failed: ",
    ),
    (
        "postfix-sasl",
        "-",
        "Nov 22 11:00:04 mx postfix/smtpd[3004]: warning: unknown[192.0.2.102]: SASL LOGIN authentication failed: Connection lost to authentication server",
    ),
    (
        "postfix-sasl",
        "-",
        "Nov 22 11:00:05 mx postfix/smtpd[3005]: warning: hostname mail.example.com does not resolve to address 192.0.2.104: Name or service not known",
    ),
    (
        "postfix-rbl",
        "192.0.2.110",
        "Nov 22 11:01:01 mx postfix/postscreen[4001]: NOQUEUE: reject: RCPT from [192.0.2.110]:51234: 550 5.7.1 Service unavailable; client [192.0.2.110] blocked using zen.spamhaus.org; from=<a@b.example>, to=<c@d.example>, proto=ESMTP, helo=<x.example>",
    ),
    (
        "postfix-rbl",
        "2001:db8::110",
        "Nov 22 11:01:02 mx postfix/smtpd[4002]: NOQUEUE: reject: RCPT from unknown[2001:db8::110]: 554 5.7.1 Service unavailable; Client host [2001:db8::110] blocked using bl.spamcop.net; Blocked - see https://www.spamcop.net/bl.shtml?2001:db8::110; from=<a@b.example> to=<c@d.example> proto=ESMTP helo=<x>",
    ),
    (
        "postfix-rbl",
        "-",
        "Nov 22 11:01:03 mx postfix/postscreen[4001]: DNSBL rank 3 for [192.0.2.111]:51235",
    ),
    (
        "postfix-relay",
        "203.0.113.120",
        "Nov 22 11:02:01 mx postfix/smtpd[5001]: 4F2A1C0E5D: reject: RCPT from unknown[203.0.113.120]: 554 5.7.1 <victim@other.example>: Relay access denied; from=<a@b.example> to=<victim@other.example> proto=ESMTP helo=<x>",
    ),
    (
        "postfix-relay",
        "203.0.113.121",
        "Nov 22 11:02:02 mx postfix/smtpd[5001]: NOQUEUE: reject: RCPT from unknown[203.0.113.121]: 554 5.7.1 <x@[198.51.100.99]: Relay access denied;>: Relay access denied; from=<a@b.example> to=<x@[198.51.100.99]: Relay access denied;> proto=ESMTP helo=<x>",
    ),
    # dovecot: managesieve, 2.3 and 2.3.14+ disconnect forms, passdb drivers, auth-worker prefix
    (
        "dovecot",
        "192.0.2.130",
        "Nov 22 11:03:01 mx dovecot: managesieve-login: Disconnected (auth failed, 1 attempts in 4 secs): user=<admin>, method=PLAIN, rip=192.0.2.130, lip=192.0.2.1, TLS, session=<abc123>",
    ),
    (
        "dovecot",
        "203.0.113.130",
        "Nov 22 11:03:02 mx dovecot: imap-login: Disconnected: Connection closed (auth failed, 2 attempts in 8 secs): user=<info@example.org>, method=LOGIN, rip=203.0.113.130, lip=192.0.2.1, TLS, session=<Zx9+AbCdEfGh>",
    ),
    (
        "dovecot",
        "2001:db8::130",
        "Nov 22 11:03:03 mx dovecot: imap-login: Login aborted: Connection closed (auth failed, 1 attempts in 2 secs) (auth_failed): user=<sales@example.org>, method=PLAIN, rip=2001:db8::130, lip=2001:db8::1, TLS, session=<q/w+e=r>",
    ),
    (
        "dovecot",
        "203.0.113.131",
        "Nov 22 11:03:04 mx dovecot: auth-worker(4242): Info: conn unix:auth-worker (pid=4241,uid=97): auth-worker<3>: sql(info@example.org,203.0.113.131,<Zx9+AbCd>): Password mismatch (given password: hunter2)",
    ),
    (
        "dovecot",
        "-",
        "Nov 22 11:03:04 mx dovecot: auth-worker(4242): Info: sql(info@example.org,203.0.113.134,<Zx9+AbCd>): Password mismatch (given password: x,198.51.100.99,<y>): Password mismatch)",
    ),
    (
        "dovecot",
        "-",
        "Nov 22 11:03:04 mx dovecot: auth-worker(4242): Info: sql(u,198.51.100.99,<x>): unknown user,203.0.113.135,<Zx9+AbCd>): Password mismatch",
    ),
    (
        "dovecot",
        "192.0.2.131",
        "Nov 22 11:03:05 mx dovecot: auth: passwd-file(test,192.0.2.131,<AbCd>): unknown user",
    ),
    (
        "dovecot",
        "192.0.2.132",
        "Nov 22 11:03:06 mx dovecot: auth-worker(304): pam(root,192.0.2.132): pam_authenticate() failed: Authentication failure (password mismatch?)",
    ),
    (
        "dovecot",
        "203.0.113.132",
        "Nov 22 11:03:07 mx dovecot: imap-login: Disconnected (auth failed, 1 attempts in 2 secs): user=<a>, method=PLAIN, rip=198.51.100.99, lip=192.0.2.1, session=<b>, method=PLAIN, rip=203.0.113.132, lip=192.0.2.1, session=<q1w2e3r4>",
    ),
    (
        "dovecot",
        "-",
        "Nov 22 11:03:08 mx dovecot: imap(bob@example.org)<4242><xyzXYZ12>: Disconnected: Logged out in=120 out=5000",
    ),
    (
        "dovecot",
        "-",
        "Nov 22 11:03:09 mx dovecot: pop3-login: Disconnected (no auth attempts in 0 secs): user=<>, rip=192.0.2.133, lip=192.0.2.1, session=<abcd>",
    ),
    # exim: hostname + port + interface, IPv6, no set_id, junk HELOs; decoys in set_id and HELO
    (
        "exim-auth",
        "192.0.2.140",
        "Nov 22 11:04:01 mx exim4[3100]: 2026-11-22 11:04:01 [3100] plain_server authenticator failed for mail.example.net (helo.example) [192.0.2.140]:52345 I=[192.0.2.1]:587: 535 Incorrect authentication data (set_id=info@example.org)",
    ),
    (
        "exim-auth",
        "2001:db8::140",
        "Nov 22 11:04:02 mx exim[3101]: 2026-11-22 11:04:02 login authenticator failed for (User) [2001:db8::140]: 535 Incorrect authentication data",
    ),
    (
        "exim-auth",
        "-",
        "Nov 22 11:04:03 mx exim[3102]: 2026-11-22 11:04:03 dovecot_login authenticator failed for (User) [203.0.113.140]: 535 Incorrect authentication data (set_id=x) [198.51.100.99]: 535 Incorrect authentication data (set_id=y)",
    ),
    (
        "exim-auth",
        "-",
        "Nov 22 11:04:03 mx exim[3102]: 2026-11-22 11:04:03 dovecot_login authenticator failed for (x) [198.51.100.99]: 535 Incorrect authentication data (set_id=y) [192.0.2.147]: 535 Incorrect authentication data (set_id=u)",
    ),
    (
        "exim-auth",
        "192.0.2.147",
        "Nov 22 11:04:03 mx exim[3102]: 2026-11-22 11:04:03 dovecot_login authenticator failed for (my junk (helo)) [192.0.2.147]: 535 Incorrect authentication data (set_id=a b)",
    ),
    (
        "exim-auth",
        "-",
        "Nov 22 11:04:04 mx exim[3103]: 2026-11-22 11:04:04 dovecot_login authenticator failed for (x) [198.51.100.99]: 535 Incorrect authentication data (y) [192.0.2.141]: 535 Incorrect authentication data",
    ),
    (
        "exim-reject",
        "192.0.2.142",
        "Nov 22 11:04:05 mx exim4[3104]: 2026-11-22 11:04:05 H=mail.example.net [192.0.2.142]:41234 I=[192.0.2.1]:25 F=<a@b.example> rejected RCPT <nobody@d.example>: Unrouteable address",
    ),
    (
        "exim-reject",
        "2001:db8::142",
        "Nov 22 11:04:06 mx exim[3105]: 2026-11-22 11:04:06 H=([2001:db8::142]) [2001:db8::142] rejected EHLO or HELO [2001:db8::142]: HELO with own address literal",
    ),
    (
        "exim-reject",
        "192.0.2.143",
        "Nov 22 11:04:07 mx exim[3106]: 2026-11-22 11:04:07 rejected EHLO from [192.0.2.143]: syntactically invalid argument(s): x@y",
    ),
    (
        "exim-reject",
        "-",
        "Nov 22 11:04:08 mx exim[3107]: 2026-11-22 11:04:08 H=(helo.example) [203.0.113.143] F=<x> rejected RCPT <y) [198.51.100.99] F=<a> rejected RCPT <b>: relay not permitted",
    ),
    (
        "exim-reject",
        "-",
        "Nov 22 11:04:08 mx exim[3107]: 2026-11-22 11:04:08 H=(x) [198.51.100.99] F=<a> rejected RCPT <b>: x) [192.0.2.145] F=<s@x.example> rejected RCPT <r@y.example>: relay not permitted",
    ),
    (
        "exim-reject",
        "192.0.2.146",
        "Nov 22 11:04:08 mx exim[3107]: 2026-11-22 11:04:08 H=(x y [z]) [192.0.2.146] F=<a@b.example> rejected RCPT <c@d.example>: relay not permitted",
    ),
    (
        "exim-reject",
        "-",
        "Nov 22 11:04:09 mx exim[3108]: 2026-11-22 11:04:09 H=(helo.example) [192.0.2.144] F=<a@b.example> temporarily rejected RCPT <c@d.example>: greylisted",
    ),
    # kerio: login failures from the Security log
    (
        "kerio",
        "192.0.2.150",
        "Nov 22 11:05:01 mail kerio-connect: Failed SMTP login from 192.0.2.150 with SASL method LOGIN.",
    ),
    (
        "kerio",
        "203.0.113.150",
        "Nov 22 11:05:02 mail kerio-connect: Failed IMAP login from 203.0.113.150, missing parameter in AUTHENTICATE header",
    ),
    (
        "kerio",
        "203.0.113.151",
        "Nov 22 11:05:03 mail kerio-connect: User x. Attempt from IP address 198.51.100.99 doesn't exist. Attempt from IP address 203.0.113.151.",
    ),
    # qmail: multilog stamp kept, helo-dns-check, temporary rejection, decoy with a full fake tail
    (
        "qmail-smtp",
        "192.0.2.160",
        "Nov 22 11:06:01 mx qmail-smtpd: @4000000059f5195c211f2234 GREETDELAY from 192.0.2.160: client sent data before greeting",
    ),
    (
        "qmail-smtp",
        "203.0.113.160",
        "Nov 22 11:06:02 mx qmail-smtpd: helo-dns-check: blocked with: HELO doesn't match IP [203.0.113.160]",
    ),
    (
        "qmail-smtp",
        "-",
        "Nov 22 11:06:03 mx qmail-smtpd: qlogenvelope: result=rejected code=451 reason=dnsfail detail= helo=x.example mailfrom=a@b.example rcptto=c@d.example relay=no rcpthosts=yes size= authuser= authtype= encrypted= sslverified=no localip=192.0.2.1 localport=25 remoteip=192.0.2.161 remoteport=15633 remotehost= qp= pid=20006",
    ),
    (
        "qmail-smtp",
        "203.0.113.161",
        "Nov 22 11:06:04 mx qmail-smtpd: qlogenvelope: result=rejected code=553 reason=authfailed detail= helo=x localport=2 remoteip=198.51.100.99 remoteport=3 remotehost=h qp= pid=1 mailfrom=a@b.example rcptto=c@d.example relay=no rcpthosts=yes size= authuser= authtype= encrypted= sslverified=no localip=192.0.2.1 localport=587 remoteip=203.0.113.161 remoteport=15632 remotehost=bad=ptr qp= pid=20005",
    ),
    # vpopmail: another service, no password logged, a decoy in the login name
    (
        "vpopmail",
        "192.0.2.170",
        "Nov 22 11:07:01 mx vpopmail[3078]: vchkpw-pop3: password fail info@example.org:192.0.2.170",
    ),
    (
        "vpopmail",
        "203.0.113.170",
        "Nov 22 11:07:02 mx vpopmail[3079]: vchkpw-smtp: vpopmail user not found x@y:198.51.100.99:203.0.113.170",
    ),
    (
        "vpopmail",
        "2001:db8::170",
        "Nov 22 11:07:03 mx vpopmail[3080]: vchkpw-submission: password fail (pass: 'x') info@example.de:2001:db8::170",
    ),
    # qmailadmin: decoys after and before the address are not counted, a user with spaces is
    (
        "qmailadmin",
        "-",
        "Nov 22 11:07:04 mx qmailadmin: 2026/11/22 11:07:04 user:admin@example.org ip:192.0.2.171 auth:failed [@x] ip:198.51.100.99 auth:failed [@y]",
    ),
    (
        "qmailadmin",
        "-",
        "Nov 22 11:07:04 mx qmailadmin: 2026/11/22 11:07:04 user:x ip:198.51.100.99 auth:failed [@y] ip:192.0.2.171 auth:failed [@example.org]",
    ),
    (
        "qmailadmin",
        "192.0.2.173",
        "Nov 22 11:07:04 mx qmailadmin: 2026/11/22 11:07:04 user:a b ip:192.0.2.173 auth:failed [@example.org]",
    ),
    (
        "qmailadmin",
        "-",
        "Nov 22 11:07:05 mx qmailadmin: 2026/11/22 11:07:05 user:postmaster@example.org ip:192.0.2.172 auth:ok [@example.org]",
    ),
    # roundcube: no proxy, X-Real-IP + X-Forwarded-For list, 1.3+ IMAP error with "against",
    # server trouble (not a failure), decoys in the user and in the client's X-Forwarded-For part
    (
        "roundcube",
        "192.0.2.180",
        "Nov 22 11:08:01 mx roundcube: <3lq5onb8> Failed login for admin from 192.0.2.180 in session 3lq5onb87b7oqnc7 (error: 1)",
    ),
    (
        "roundcube",
        "203.0.113.180",
        "Nov 22 11:08:02 mx roundcube: <3lq5onb8> Failed login for x from 198.51.100.99 in session a (error: 1) from 192.0.2.2 (X-Real-IP: 192.0.2.9,X-Forwarded-For: 198.51.100.99, 203.0.113.180) in session 3lq5onb87b7oqnc7 (error: 1)",
    ),
    (
        "roundcube",
        "203.0.113.181",
        "Nov 22 11:08:03 mx roundcube: <s073mu0l> IMAP Error: Login failed for user@example.org against localhost from 192.0.2.2(X-Forwarded-For: 203.0.113.181). AUTHENTICATE PLAIN: Authentication failed. in /var/www/roundcube/program/lib/Roundcube/rcube_imap.php on line 200 (POST /?_task=login&_action=login)",
    ),
    (
        "roundcube",
        "192.0.2.181",
        "Nov 22 11:08:04 mx roundcube: <2aae7139> IMAP Error: Login failed for juan@example.org against mail.example.org from 192.0.2.181. AUTHENTICATE LOGIN: A0001 NO [AUTHENTICATIONFAILED] Authentication failed. in /var/www/html/program/lib/Roundcube/rcube_imap.php on line 200 (POST /?_task=login&_action=login)",
    ),
    (
        "roundcube",
        "-",
        "Nov 22 11:08:05 mx roundcube: <debf5bfe> IMAP Error: Login failed for diego@example.org against mail.example.org from 192.0.2.182. Could not connect to ssl://mail.example.org:993: Unknown reason in /var/www/html/program/lib/Roundcube/rcube_imap.php on line 200 (POST /?_task=mail&_action=refresh)",
    ),
    (
        "roundcube",
        "203.0.113.184",
        "Nov 22 11:08:07 mx roundcube: <x> IMAP Error: Login failed for a b against localhost from 203.0.113.184. AUTHENTICATE PLAIN: Authentication failed. in /p.php on line 200 (POST /?_task=login&_action=login)",
    ),
    (
        "roundcube",
        "-",
        "Nov 22 11:08:08 mx roundcube: IMAP Error: Login failed for a from 198.51.100.99. AUTHENTICATE PLAIN: Authentication failed. x against localhost from 203.0.113.183. AUTHENTICATE PLAIN: Authentication failed. in /var/www/roundcube/program/lib/Roundcube/rcube_imap.php on line 200 (POST /?_task=login&_action=login)",
    ),
    (
        "roundcube",
        "-",
        "Nov 22 11:08:06 mx roundcube: IMAP Error: Login failed for admin@example.org from 192.0.2.2(X-Forwarded-For: a,198.51.100.99). Authentication failed in x on line 1 (GET /, 203.0.113.182). Could not connect to ssl://imap.example.org:993: Unknown reason in /var/www/roundcube/program/lib/Roundcube/rcube_imap.php on line 211 (POST /?_task=login&_action=login)",
    ),
    # sshd: keys, PAM, abandoned logins, too many attempts, AllowUsers; decoys in user names
    (
        "sshd",
        "192.0.2.190",
        "Nov 22 11:09:01 mx sshd[1001]: Failed publickey for root from 192.0.2.190 port 40022 ssh2: RSA SHA256:Zm9vYmFyYmF6",
    ),
    (
        "sshd",
        "203.0.113.190",
        "Nov 22 11:09:02 mx sshd[1002]: Failed keyboard-interactive/pam for invalid user oracle from 203.0.113.190 port 40023 ssh2",
    ),
    (
        "sshd",
        "192.0.2.191",
        "Nov 22 11:09:03 mx sshd[1003]: Connection closed by authenticating user root 192.0.2.191 port 40024 [preauth]",
    ),
    (
        "sshd",
        "2001:db8::191",
        "Nov 22 11:09:04 mx sshd[1004]: error: maximum authentication attempts exceeded for invalid user admin from 2001:db8::191 port 40025 ssh2 [preauth]",
    ),
    (
        "sshd",
        "203.0.113.191",
        "Nov 22 11:09:05 mx sshd[1005]: User x from 198.51.100.99 not allowed because y from 203.0.113.191 not allowed because not listed in AllowUsers",
    ),
    (
        "sshd",
        "203.0.113.192",
        "Nov 22 11:09:06 mx sshd[1006]: Connection closed by authenticating user x 198.51.100.99 port 1 [preauth] 203.0.113.192 port 40026 [preauth]",
    ),
    (
        "sshd",
        "-",
        "Nov 22 11:09:07 mx sshd[1007]: Connection closed by 192.0.2.193 port 40027 [preauth]",
    ),
    (
        "sshd",
        "-",
        "Nov 22 11:09:08 mx sshd[1008]: Disconnected from user alice 192.0.2.194 port 40028",
    ),
]


def _corpus_rows() -> list[tuple[int, str, str, str]]:
    rows = []
    for number, raw in enumerate(CORPUS.read_text(encoding="utf-8").split("\n"), start=1):
        if raw and not raw.startswith("#"):
            service, expected, line = raw.split("\t")
            rows.append((number, service, expected, line))
    return rows


ALL_ROWS = [
    pytest.param(service, expected, line, id=f"tsv{number}-{service}-{expected}")
    for number, service, expected, line in _corpus_rows()
] + [
    pytest.param(service, expected, line, id=f"extra{number}-{service}-{expected}")
    for number, (service, expected, line) in enumerate(EXTRA_ROWS, start=1)
]


def _split(line: str) -> tuple[str, str]:
    found = LOG_LINE.match(line)
    assert found is not None, f"not a log-file line: {line!r}"
    return found.group(1), found.group(2)


@functools.cache
def _compiled(name: str) -> Filter:
    return shipped_filter(name).compile()


# A line per shipped filter whose attacker-controlled text (user name, HELO, recipient, set_id)
# carries a raw control character, written {c}, followed by a fake host field naming the decoy:
# (filter, program, MSG, the address the filter must report on the line as rsyslog escapes it,
# "-" when the filter then refuses the line). Without the escape, a raw LF stops the filter's
# ".*" at the decoy (dovecot, exim-reject, qmailadmin ban it) or before the real field (the
# others miss the offender).
SMUGGLED: list[tuple[str, str, str, str]] = [
    (
        "dovecot",
        "dovecot",
        "imap-login: Disconnected (auth failed, 1 attempts in 2 secs): user=<x>, method=PLAIN, rip=198.51.100.99, lip=192.0.2.1{c}>, method=PLAIN, rip=203.0.113.122, lip=192.0.2.1, session=<q1w2e3r4>",
        "203.0.113.122",
    ),
    (
        "exim-auth",
        "exim",
        "2026-11-22 10:02:01 dovecot_login authenticator failed for (User) [203.0.113.123]: 535 Incorrect authentication data (set_id=x{c}H=(User) [198.51.100.99])",
        "203.0.113.123",
    ),
    (
        "exim-reject",
        "exim",
        "2026-11-22 10:02:02 H=(x) [198.51.100.99] F=<a@b.example> rejected RCPT <c@d.example>: {c}) [203.0.113.124] F=<a@b.example> rejected RCPT <c@d.example>: relay not permitted",
        "-",
    ),
    (
        "kerio",
        "kerio-connect",
        "Attempt to deliver to unknown recipient <a@b.example>, from <x@y.example>, IP address 198.51.100.99{c}>, from <x@y.example>, IP address 203.0.113.125",
        "203.0.113.125",
    ),
    (
        "postfix-rbl",
        "postfix/smtpd",
        "NOQUEUE: reject: RCPT from unknown[203.0.113.126]: 554 5.7.1 Service unavailable; Client host [203.0.113.126] blocked using zen.spamhaus.org; from=<a@b.example> to=<c@d.example> proto=ESMTP helo=<x{c}NOQUEUE: reject: RCPT from unknown[198.51.100.99]: 554 5.7.1 Service unavailable; Client host [198.51.100.99] blocked using zen.spamhaus.org;>",
        "203.0.113.126",
    ),
    (
        "postfix-relay",
        "postfix/smtpd",
        "NOQUEUE: reject: RCPT from unknown[203.0.113.127]: 454 4.7.1 <victim{c}unknown[198.51.100.99]@other.example>: Relay access denied; from=<a@b.example> to=<victim@other.example> proto=ESMTP helo=<x>",
        "203.0.113.127",
    ),
    (
        "postfix-sasl",
        "postfix/submission/smtpd",
        "warning: unknown[203.0.113.128]: SASL LOGIN authentication failed: UGFzc3dvcmQ6, sasl_username=x{c}warning: unknown[198.51.100.99]: SASL LOGIN authentication failed:",
        "203.0.113.128",
    ),
    (
        "qmail-smtp",
        "qmail-smtpd",
        "qlogenvelope: result=rejected code=553 reason=authfailed detail= helo=x localip=192.0.2.1 localport=25 remoteip=198.51.100.99 remoteport=1 remotehost= qp= pid=1{c} mailfrom=a@b.example rcptto=c@d.example relay=no rcpthosts=yes size= authuser= authtype= encrypted= sslverified=no localip=192.0.2.1 localport=587 remoteip=203.0.113.129 remoteport=15632 remotehost= qp= pid=20005",
        "203.0.113.129",
    ),
    (
        "qmailadmin",
        "qmailadmin",
        "2026/11/22 10:05:01 user:x ip:198.51.100.99 auth:failed{c} ip:203.0.113.130 auth:failed [@example.org]",
        "-",
    ),
    (
        "roundcube",
        "roundcube",
        "Failed login for x from 198.51.100.99 in session abc (error: 49){c} from 203.0.113.131 in session 3lq5onb87b7oqnc7 (error: 49)",
        "203.0.113.131",
    ),
    (
        "sshd",
        "sshd",
        "Failed password for invalid user x from 198.51.100.99 port 22 ssh2{c} from 203.0.113.132 port 50022 ssh2",
        "203.0.113.132",
    ),
    (
        "vpopmail",
        "vpopmail",
        "vchkpw-submission: password fail (pass: 'x') postmaster@example.org:198.51.100.99{c}:203.0.113.133",
        "203.0.113.133",
    ),
]
# LF and CR end lines, NUL ends C strings, ESC starts terminal sequences, NEL is a C1 line end.
CONTROLS = {"LF": b"\n", "CR": b"\r", "NUL": b"\x00", "ESC": b"\x1b", "NEL": b"\xc2\x85"}


def test_every_shipped_filter_has_a_smuggling_line() -> None:
    assert sorted(row[0] for row in SMUGGLED) == shipped_filter_names()


@pytest.mark.parametrize("control", list(CONTROLS))
@pytest.mark.parametrize(
    ("name", "program", "text", "expected"), SMUGGLED, ids=[r[0] for r in SMUGGLED]
)
def test_a_control_character_never_lets_a_filter_read_a_smuggled_address(
    name: str, program: str, text: str, expected: str, control: str
) -> None:
    """A raw control character in attacker-controlled text, as the receiver hands it on: the
    filter never reports the decoy and reports the real address where it would on the line
    rsyslog writes (the control as '#' and three octal digits)."""
    head, tail = text.encode().split(b"{c}")
    message = parse(
        b"<38>Nov 22 10:00:01 mx %s[1]: %s%s%s" % (program.encode(), head, CONTROLS[control], tail),
        REF,
    )
    assert message.app_name == program
    assert any(fnmatchcase(program, p) for p in shipped_filter(name).programs)
    found = _compiled(name).match(message.msg)
    if expected == "-":
        assert found is None
    else:
        assert found is not None
        assert found.address == ipaddress.ip_address(expected)


# --- the shipped filters against the corpus ------------------------------------------------------


@pytest.mark.parametrize(("service", "expected", "line"), ALL_ROWS)
def test_shipped_filter_reports_the_expected_address(
    service: str, expected: str, line: str
) -> None:
    """The service's filter reads the row's program and reports exactly its address, or nothing."""
    program, msg = _split(line)
    definition = shipped_filter(service)
    assert any(fnmatchcase(program, p) for p in definition.programs), (program, definition.programs)
    found = _compiled(service).match(msg)
    if expected == "-":
        assert found is None
    else:
        assert found is not None
        assert found.address == ipaddress.ip_address(expected)


@pytest.mark.parametrize(("service", "expected", "line"), ALL_ROWS)
def test_no_shipped_filter_reports_another_address(service: str, expected: str, line: str) -> None:
    """No shipped filter reports the decoy, or any address but the row's, for any row."""
    _, msg = _split(line)
    for name in shipped_filter_names():
        found = _compiled(name).match(msg)
        if found is None:
            continue
        assert found.address != DECOY, name
        if expected != "-":
            assert found.address == ipaddress.ip_address(expected), name


@pytest.mark.parametrize(("service", "expected", "line"), ALL_ROWS)
def test_prefilter_never_changes_the_result(service: str, expected: str, line: str) -> None:
    """match (with the literal prefilter) agrees with examine (without it) on every row."""
    _, msg = _split(line)
    for name in shipped_filter_names():
        f = _compiled(name)
        outcome, found, _ = f.examine(msg)
        assert f.match(msg) == (found if outcome is Outcome.MATCHED else None), name


def test_one_shipped_filter_per_corpus_service() -> None:
    """Every service of the corpus has a shipped filter and every shipped filter is exercised."""
    services = {service for _, service, _, _ in _corpus_rows()}
    assert set(shipped_filter_names()) == services


@pytest.mark.parametrize("name", shipped_filter_names())
def test_shipped_filter_is_complete(name: str) -> None:
    """Each shipped filter loads, says what it is for, selects programs and has a prefilter."""
    definition = shipped_filter(name)
    assert definition.name == name
    assert definition.path == shipped_filters_dir() / f"{name}.toml"
    assert definition.description
    assert definition.programs
    f = definition.compile()
    assert f.name == name
    assert len(f.literals) == len(definition.failregex)  # every failregex has a usable literal


# --- tags and addresses --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("regex", "text", "expected"),
    [
        (r"unknown\[<HOST>\]", "warning: unknown[203.0.113.7]: SASL", "203.0.113.7"),
        (r"rip=<HOST>", "rip=203.0.113.8, lip=192.0.2.1", "203.0.113.8"),
        (r"from <HOST> port", "from 2001:db8::31 port 50023", "2001:db8::31"),
        (r"\[<HOST>\]", "unknown[2001:db8::7]: SASL", "2001:db8::7"),
        (r"IP address <HOST>", "Attempt from IP address 203.0.113.17.", "203.0.113.17"),
        (r"IP address <HOST>", "Attempt from IP address 2001:db8::17.", "2001:db8::17"),
        (r"^.*:<HOST>$", "user@example.org:2001:db8::1", "2001:db8::1"),
        (r"^.*:<HOST>$", "user@example.de:2001:db8::1", "2001:db8::1"),
        (r"^.*:<HOST>$", "user@example.org:203.0.113.9", "203.0.113.9"),
        (r"^.*:<HOST>$", "user@example.org:2001:db8::192.0.2.1", "2001:db8::c000:201"),
        (r"^x <ADDR>$", "x 1:2:3:4:5:6:7:8", "1:2:3:4:5:6:7:8"),
        (r"^x <ADDR>$", "x 2001:DB8::A", "2001:db8::a"),
        (r"^x <IP4>", "x 192.0.2.1", "192.0.2.1"),
        (r"^x <IP6>", "x 2001:db8::1", "2001:db8::1"),
    ],
)
def test_host_tag_captures_the_whole_address(regex: str, text: str, expected: str) -> None:
    """Host tags capture the whole address, never part of it, next to brackets, commas, dots."""
    found = Filter([regex]).match(text)
    assert found is not None
    assert found.address == ipaddress.ip_address(expected)


@pytest.mark.parametrize(
    ("regex", "text"),
    [
        (r"^x <HOST>", "x 999.1.1.1"),  # matches the pattern, is no address
        (r"^x <HOST>", "x 01.2.3.4"),  # leading zeros are ambiguous (octal?): refused
        (r"^x <HOST>", "x 1.2.3.4.5"),  # not an address, and no part of it is taken
        (r"^x .*<HOST>$", "x 1.2.3.4.5"),
        (r"^x <HOST>", "x 203.0.113.7x"),
        (r"^x .*<HOST> y$", "x 12001:db8::1 y"),  # no "2001:db8::1" out of it
        (r"^x <IP4>", "x 2001:db8::1"),
        (r"^x <IP6>", "x 192.0.2.1"),
        (r"^x <ADDR>", "x mail.example.net"),
    ],
)
def test_host_tag_refuses_what_is_not_an_address(regex: str, text: str) -> None:
    """Invalid, partial, wrong-family or hostname captures are no match (allow_dns off)."""
    assert Filter([regex]).match(text) is None


def test_invalid_capture_lets_the_next_failregex_decide() -> None:
    """A failregex whose capture is no address does not stop the later ones from matching."""
    f = Filter([r"^a <HOST>", r"b <HOST>$"])
    assert f.examine("a 999.1.1.1 b 192.0.2.5") == (
        Outcome.MATCHED,
        Match("192.0.2.5", ipaddress.IPv4Address("192.0.2.5"), None, {}),
        1,
    )
    assert f.match("a 999.1.1.1 b 192.0.2.5") is not None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("x ::ffff:192.0.2.1", "192.0.2.1"),
        ("x ::FFFF:c000:201", "192.0.2.1"),
        ("x 0:0:0:0:0:ffff:192.0.2.1", "192.0.2.1"),
    ],
)
def test_ipv4_mapped_addresses_are_normalised(text: str, expected: str) -> None:
    """An IPv4-mapped IPv6 address comes back as the IPv4 address; host keeps the text."""
    found = Filter([r"^x <HOST>"]).match(text)
    assert found is not None
    assert found.address == ipaddress.IPv4Address(expected)
    assert found.host == text[2:]


def test_allow_dns_captures_hostnames_unresolved() -> None:
    """With allow_dns, <HOST> also captures a hostname (address None); <ADDR> never does."""
    regex = r"^login from <HOST>$"
    assert Filter([regex]).match("login from mail.example.net") is None
    found = Filter([regex], allow_dns=True).match("login from mail.example.net")
    assert found == Match("mail.example.net", None, None, {})
    by_address = Filter([regex], allow_dns=True).match("login from 192.0.2.9")
    assert by_address is not None and by_address.address == ipaddress.IPv4Address("192.0.2.9")
    assert Filter([regex], allow_dns=True).match("login from 999.1.1.1") is None
    assert Filter([r"^login from <ADDR>$"], allow_dns=True).match("login from mail.x.net") is None


def test_f_user_and_other_fields_are_captured() -> None:
    """<F-USER> fills Match.user; <F-NAME> and plain named groups fill fields (lower-cased)."""
    f = Filter([r"^for <F-USER>\S+</F-USER> id <F-ID>\d+</F-ID> from <HOST> port (?P<port>\d+)"])
    found = f.match("for root id 42 from 192.0.2.1 port 22")
    assert found is not None
    assert found.user == "root"
    assert dict(found.fields) == {"id": "42", "port": "22"}
    assert Filter([r"^from <HOST>"]).match("from 192.0.2.1") == Match(
        "192.0.2.1", ipaddress.IPv4Address("192.0.2.1"), None, {}
    )


def test_unmatched_optional_user_is_none() -> None:
    """An <F-USER> in an optional part that did not take part leaves user None, fields empty."""
    f = Filter([r"^fail(?: for <F-USER>\S+</F-USER>)?(?: id <F-ID>\d+</F-ID>)? from <HOST>"])
    found = f.match("fail from 192.0.2.1")
    assert found is not None and found.user is None and dict(found.fields) == {}


# --- examine ------------------------------------------------------------------------------------


def test_examine_reports_matched_ignored_and_missed() -> None:
    """examine gives MATCHED/IGNORED with the failregex's 0-based index, MISSED with None."""
    f = Filter([r"^auth failed from <HOST>$", r"^bad user \S+ from <HOST>$"], [r"^bad user root "])
    matched = f.examine("bad user bob from 192.0.2.1")
    assert matched[0] is Outcome.MATCHED and matched[2] == 1
    assert matched[1] is not None and matched[1].address == ipaddress.IPv4Address("192.0.2.1")
    ignored = f.examine("bad user root from 192.0.2.2")
    assert ignored[0] is Outcome.IGNORED and ignored[2] == 1 and ignored[1] is not None
    assert f.match("bad user root from 192.0.2.2") is None
    assert f.examine("login ok from 192.0.2.3") == (Outcome.MISSED, None, None)


def test_shipped_ignoreregex_is_reported_as_ignored() -> None:
    """postfix-sasl ignores failures caused by a lost authentication server."""
    msg = "warning: unknown[192.0.2.102]: SASL LOGIN authentication failed: Connection lost to authentication server"
    outcome, found, index = _compiled("postfix-sasl").examine(msg)
    assert (outcome, index) == (Outcome.IGNORED, 0)
    assert found is not None and found.address == ipaddress.IPv4Address("192.0.2.102")


# --- errors -------------------------------------------------------------------------------------


def test_bad_regex_error_names_filter_regex_and_position() -> None:
    """A bad regex is reported with the filter, failregex #N (1-based) and the position."""
    with pytest.raises(FilterError) as caught:
        Filter([r"^ok <HOST>", r"from (<HOST>"], name="demo")
    message = str(caught.value)
    assert "filter 'demo'" in message
    assert "failregex #2" in message
    assert "missing ), unterminated subpattern at position 5" in message


def test_bad_ignoreregex_is_named_as_such() -> None:
    """A bad ignoreregex is reported as ignoreregex #N."""
    with pytest.raises(FilterError, match=r"ignoreregex #1 .*bad regular expression"):
        Filter([r"^x <HOST>"], [r"[unclosed"], name="demo")


@pytest.mark.parametrize(
    ("regex", "why"),
    [
        (r"^login failed for \S+", r"failregex #1 .* has no <HOST>, <ADDR>, <IP4> or <IP6> tag"),
        (r"^for <F-USER>\S+ from <HOST>", r"<F-USER> is not closed by </F-USER>"),
        (r"^for \S+</F-USER> from <HOST>", r"</F-USER> closes no open <F-USER>"),
        (r"^<F-HOST>x</F-HOST> <HOST>", r"<F-HOST> is reserved"),
    ],
)
def test_tag_errors_say_what_is_wrong(regex: str, why: str) -> None:
    """Missing, doubled, unbalanced or reserved tags are FilterErrors that say why."""
    with pytest.raises(FilterError, match=why):
        Filter([regex], name="demo")


def test_filter_needs_a_failregex() -> None:
    """A filter without failregex is refused."""
    with pytest.raises(FilterError, match="no failregex"):
        Filter([], name="demo")


# --- the prefilter -------------------------------------------------------------------------------


def test_filter_literals_need_one_usable_literal_per_failregex() -> None:
    """literals has one entry per failregex, or is empty if any lacks a literal of 3+ chars."""
    f = Filter([r"^foo(?: bar)? from <HOST>", r"^failed for \S+ from <HOST>"])
    assert f.literals == (" from ", "failed for ")
    assert Filter([r"^failed from <HOST>", r"^a <HOST>"]).literals == ()
    assert Filter([r"^fail from <HOST>|^nope"]).literals == ()


def test_alternative_without_host_is_no_match() -> None:
    """A failregex branch that matched without the host tag gives no failure (and no crash)."""
    f = Filter([r"^fail from <HOST>|^nope"])
    assert f.match("nope") is None
    assert f.examine("nope") == (Outcome.MISSED, None, None)
    assert f.match("fail from 192.0.2.1") is not None


# --- robustness ----------------------------------------------------------------------------------

_PIECES = sorted(
    {piece for _, _, _, line in _corpus_rows() for piece in _split(line)[1].split(" ")}
)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.sampled_from(_PIECES), st.text(max_size=12), st.sampled_from(["198.51.100.99"])
        ),
        max_size=25,
    ).map(" ".join)
)
def test_match_never_raises_and_agrees_with_examine(text: str) -> None:
    """Every shipped filter takes any text without raising, and match agrees with examine."""
    for name in shipped_filter_names():
        f = _compiled(name)
        found = f.match(text)
        outcome, examined, _ = f.examine(text)
        assert found == (examined if outcome is Outcome.MATCHED else None)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.ip_addresses().map(str), st.ip_addresses(v=6).map(lambda a: a.exploded)))
def test_every_address_form_is_captured_and_parsed_like_ipaddress(text: str) -> None:
    """Every textual IPv4/IPv6 form is captured whole and parsed as ipaddress parses it."""
    found = Filter([r"^x <HOST> y$"]).match(f"x {text} y")
    assert found is not None
    expected = ipaddress.ip_address(text)
    if isinstance(expected, ipaddress.IPv6Address) and expected.ipv4_mapped is not None:
        expected = expected.ipv4_mapped
    assert found.address == expected


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet="0123456789abcdefABCDEF:.", min_size=1, max_size=45))
def test_captured_addresses_are_only_what_ipaddress_accepts(text: str) -> None:
    """An address-like string is reported only if ipaddress accepts it, and as the same address."""
    found = Filter([r"^x <HOST> y$"]).match(f"x {text} y")
    try:
        expected = ipaddress.ip_address(text)
    except ValueError:
        assert found is None
        return
    if isinstance(expected, ipaddress.IPv6Address) and expected.ipv4_mapped is not None:
        expected = expected.ipv4_mapped
    assert found is not None and found.address == expected


def test_match_and_examine_agree_when_a_nofail_hit_has_no_valid_address() -> None:
    """A <F-NOFAIL> regex whose capture is not an address does not stop later failregexes."""
    f = Filter(
        [r"^<F-NOFAIL>session</F-NOFAIL> from <HOST>", r"^session from \S+ then <HOST>$"],
        name="nofail",
    )
    text = "session from 999.1.1.1 then 203.0.113.7"
    outcome, match, index = f.examine(text)
    assert (outcome, index) == (Outcome.MATCHED, 1) and match is not None
    found = f.match(text)
    assert found is not None and found.host == "203.0.113.7"
