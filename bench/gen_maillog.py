#!/usr/bin/env python3
# ruff: noqa  -- copied verbatim from the generator provided with the project (../shared/corpus/)
"""Generate a realistic mail-server syslog file (traditional BSD syslog file format).

  Nov 22 10:00:01 mx postfix/smtpd[1234]: connect from mail.example.net[198.19.4.5]

~90 % benign lines (postfix smtpd/cleanup/qmgr/smtp/lmtp session lines, dovecot
logins/logouts, exim deliveries) and ~10 % failure lines from a pool of attacker
addresses:

  sasl     postfix SASL LOGIN/PLAIN failure      (fail2ban postfix[mode=aggressive|auth|extra])
  relay    postfix NOQUEUE reject ... Relay access denied   (postfix, every mode but auth/ddos)
  dovecot  dovecot imap/pop3-login auth failed     (fail2ban dovecot)
  exim     exim "535 Incorrect authentication data"  (fail2ban exim)

Addresses: attackers come from the documentation ranges 192.0.2.0/24,
198.51.100.0/24, 203.0.113.0/24, topped up from 198.18.0.0/16 (RFC 2544
benchmarking range; the three TEST-NETs only hold 762 hosts) and, for IPv6,
2001:db8:a000::/36.  Benign clients come from 198.19.0.0/16 and
2001:db8:b000::/36 so they never collide with attackers.  Nothing here sends any
traffic: these are strings in a file.

Usable as a module (the fail2ban harness imports it) or as a CLI:

  gen_maillog.py -n 1000000 -o data/mail-1m.log            # + data/mail-1m.log.json (stats)
  gen_maillog.py -n 100000 --start now --span 300 -o x.log   # timestamps in the last 5 minutes
"""

import argparse
import collections
import ipaddress
import json
import random
import sys
import time

MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
HOST = "mx"
LIP = "10.0.0.1"  # the mail server's own (local) address as dovecot logs it; text only

USERS = [
    "alice",
    "bob",
    "carol",
    "dave",
    "erin",
    "frank",
    "grace",
    "heidi",
    "ivan",
    "judy",
    "mallory",
    "niaj",
    "olivia",
    "peggy",
    "rupert",
    "sybil",
    "trent",
    "victor",
    "walter",
]
DOMAINS = ["example.com", "example.net", "example.org", "mail.example.com", "lists.example.org"]
GUESSES = [
    "admin",
    "info",
    "test",
    "postmaster",
    "webmaster",
    "sales",
    "support",
    "user",
    "root",
    "office",
    "contact",
    "noreply",
    "backup",
    "abuse",
    "marketing",
]
QCHARS = "0123456789ABCDEF"
B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"

# share of each failure kind among failure lines
FAIL_KINDS = [("sasl", 0.35), ("relay", 0.15), ("dovecot", 0.35), ("exim", 0.15)]
# which fail2ban jail each kind feeds (exim has no jail in the server benchmark)
KIND_JAIL = {"sasl": "postfix", "relay": "postfix", "dovecot": "dovecot", "exim": "exim"}


def syslog_ts(epoch):
    t = time.localtime(epoch)
    return "%s %2d %02d:%02d:%02d" % (
        MONTHS[t.tm_mon - 1],
        t.tm_mday,
        t.tm_hour,
        t.tm_min,
        t.tm_sec,
    )


def attacker_pool(n, v6_frac=0.3, seed=1):
    """n distinct attacker addresses (strings), deterministic for a seed."""
    r = random.Random(seed)
    n6 = int(n * v6_frac)
    n4 = n - n6
    v4 = []
    for net in ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24"):
        v4.extend(str(h) for h in ipaddress.ip_network(net).hosts())
    r.shuffle(v4)
    v4 = v4[:n4]
    if len(v4) < n4:  # top up from 198.18.0.0/16 (benchmarking range)
        extra = r.sample(range(1, 65534), n4 - len(v4))
        v4.extend("198.18.%d.%d" % (x >> 8, x & 255) for x in extra if (x & 255) not in (0, 255))
        while len(v4) < n4:
            x = r.randrange(1, 65534)
            a = "198.18.%d.%d" % (x >> 8, x & 255)
            if (x & 255) not in (0, 255) and a not in v4:
                v4.append(a)
    base6 = int(ipaddress.IPv6Address("2001:db8:a000::"))
    v6 = set()
    while len(v6) < n6:
        v6.add(str(ipaddress.IPv6Address(base6 + r.getrandbits(92))))
    pool = v4 + sorted(v6)
    r.shuffle(pool)
    return pool


class MailLogGen:
    def __init__(self, seed=42, attackers=20000, fail_ratio=0.10, v6_frac=0.3, pool=None):
        self.r = random.Random(seed)
        self.pool = pool if pool is not None else attacker_pool(attackers, v6_frac, seed)
        self.fail_ratio = fail_ratio
        self.kinds = [k for k, _ in FAIL_KINDS]
        self.kind_w = [w for _, w in FAIL_KINDS]

    # ---- helpers -------------------------------------------------------
    def qid(self):
        return "".join(self.r.choice(QCHARS) for _ in range(10))

    def pid(self):
        return self.r.randint(1000, 65000)

    def benign_ip(self):
        r = self.r
        if r.random() < 0.2:
            return "2001:db8:b%03x::%x" % (r.getrandbits(12), r.getrandbits(16))
        return "198.19.%d.%d" % (r.randint(0, 255), r.randint(1, 254))

    def rdns(self, ip):
        if self.r.random() < 0.3:
            return "unknown"
        return "mail-%s.%s" % (ip.replace(".", "-").replace(":", "-"), self.r.choice(DOMAINS))

    def addr(self):
        return "%s@%s" % (self.r.choice(USERS), self.r.choice(DOMAINS))

    def session(self):
        return "".join(self.r.choice(B64) for _ in range(16))

    # ---- benign --------------------------------------------------------
    def benign(self, ts):
        r = self.r
        ip = self.benign_ip()
        x = r.random()
        if x < 0.12:
            return "%s %s postfix/smtpd[%d]: connect from %s[%s]" % (
                ts,
                HOST,
                self.pid(),
                self.rdns(ip),
                ip,
            )
        if x < 0.24:
            return (
                "%s %s postfix/smtpd[%d]: disconnect from %s[%s] ehlo=1 mail=1 rcpt=1 data=1 quit=1 commands=5"
                % (ts, HOST, self.pid(), self.rdns(ip), ip)
            )
        if x < 0.34:
            return "%s %s postfix/smtpd[%d]: %s: client=%s[%s]" % (
                ts,
                HOST,
                self.pid(),
                self.qid(),
                self.rdns(ip),
                ip,
            )
        if x < 0.44:
            return "%s %s postfix/cleanup[%d]: %s: message-id=<%s.%d@%s>" % (
                ts,
                HOST,
                self.pid(),
                self.qid(),
                self.session(),
                r.randint(1, 99999),
                r.choice(DOMAINS),
            )
        if x < 0.54:
            return "%s %s postfix/qmgr[%d]: %s: from=<%s>, size=%d, nrcpt=1 (queue active)" % (
                ts,
                HOST,
                self.pid(),
                self.qid(),
                self.addr(),
                r.randint(800, 900000),
            )
        if x < 0.64:
            return (
                "%s %s postfix/smtp[%d]: %s: to=<%s>, relay=mx.%s[%s]:25, delay=%.2f, delays=0.1/0/0.3/0.5, "
                "dsn=2.0.0, status=sent (250 2.0.0 OK %d %s - gsmtp)"
                % (
                    ts,
                    HOST,
                    self.pid(),
                    self.qid(),
                    self.addr(),
                    r.choice(DOMAINS),
                    self.benign_ip(),
                    r.random() * 3,
                    r.randint(1600000000, 1800000000),
                    self.session(),
                )
            )
        if x < 0.70:
            return (
                "%s %s postfix/lmtp[%d]: %s: to=<%s>, relay=mx.example.com[private/dovecot-lmtp], delay=0.12, "
                "delays=0.05/0.01/0/0.06, dsn=2.0.0, status=sent (250 2.0.0 <%s> %s Saved)"
                % (ts, HOST, self.pid(), self.qid(), self.addr(), self.addr(), self.session())
            )
        if x < 0.76:
            return "%s %s postfix/qmgr[%d]: %s: removed" % (ts, HOST, self.pid(), self.qid())
        if x < 0.84:
            return (
                "%s %s dovecot: imap-login: Login: user=<%s>, method=PLAIN, rip=%s, lip=%s, mpid=%d, TLS, session=<%s>"
                % (ts, HOST, self.addr(), ip, LIP, self.pid(), self.session())
            )
        if x < 0.91:
            return (
                "%s %s dovecot: imap(%s)<%d><%s>: Disconnected: Logged out in=%d out=%d deleted=0 expunged=0 "
                "trashed=0 hdr_count=0 hdr_bytes=0 body_count=0 body_bytes=0"
                % (
                    ts,
                    HOST,
                    self.addr(),
                    self.pid(),
                    self.session(),
                    r.randint(50, 5000),
                    r.randint(500, 900000),
                )
            )
        if x < 0.95:
            return (
                "%s %s exim[%d]: 1t%s-000%d-%s <= %s H=%s [%s] P=esmtps X=TLS1.3:TLS_AES_256_GCM_SHA384:256 "
                "CV=no S=%d id=%s@%s"
                % (
                    ts,
                    HOST,
                    self.pid(),
                    self.session()[:4],
                    r.randint(100, 999),
                    self.session()[:2].upper(),
                    self.addr(),
                    self.rdns(ip),
                    ip,
                    r.randint(800, 90000),
                    self.session(),
                    r.choice(DOMAINS),
                )
            )
        if x < 0.98:
            return (
                "%s %s postfix/anvil[%d]: statistics: max connection rate 1/60s for (smtp:%s) at %s"
                % (ts, HOST, self.pid(), ip, ts)
            )
        return (
            "%s %s postfix/smtpd[%d]: Anonymous TLS connection established from %s[%s]: TLSv1.3 with cipher "
            "TLS_AES_256_GCM_SHA384 (256/256 bits)" % (ts, HOST, self.pid(), self.rdns(ip), ip)
        )

    # ---- failures ------------------------------------------------------
    def failure(self, ts, ip, kind):
        r = self.r
        if kind == "sasl":
            svc = "postfix/submission/smtpd" if r.random() < 0.3 else "postfix/smtpd"
            mech, payload = r.choice(
                [
                    ("LOGIN", "UGFzc3dvcmQ6"),
                    ("LOGIN", "authentication failure"),
                    ("PLAIN", "authentication failure"),
                ]
            )
            return "%s %s %s[%d]: warning: unknown[%s]: SASL %s authentication failed: %s" % (
                ts,
                HOST,
                svc,
                self.pid(),
                ip,
                mech,
                payload,
            )
        if kind == "relay":
            return (
                "%s %s postfix/smtpd[%d]: NOQUEUE: reject: RCPT from unknown[%s]: 554 5.7.1 <%s@%s>: "
                "Relay access denied; from=<%s@%s> to=<%s@%s> proto=ESMTP helo=<%s>"
                % (
                    ts,
                    HOST,
                    self.pid(),
                    ip,
                    r.choice(GUESSES),
                    "example.invalid",
                    r.choice(GUESSES),
                    r.choice(DOMAINS),
                    r.choice(GUESSES),
                    "example.invalid",
                    "WIN-" + self.session()[:8].replace("+", "X").replace("/", "Q").upper(),
                )
            )
        if kind == "dovecot":
            svc = "imap-login" if r.random() < 0.7 else "pop3-login"
            n = r.randint(1, 3)
            return (
                "%s %s dovecot: %s: Disconnected (auth failed, %d attempts in %d secs): user=<%s@%s>, "
                "method=PLAIN, rip=%s, lip=%s, session=<%s>"
                % (
                    ts,
                    HOST,
                    svc,
                    n,
                    n * 2,
                    r.choice(GUESSES),
                    r.choice(DOMAINS),
                    ip,
                    LIP,
                    self.session(),
                )
            )
        if kind == "exim":
            return (
                "%s %s exim[%d]: dovecot_login authenticator failed for (User) [%s]: "
                "535 Incorrect authentication data (set_id=%s@%s)"
                % (ts, HOST, self.pid(), ip, r.choice(GUESSES), r.choice(DOMAINS))
            )
        raise ValueError(kind)

    def pick_attacker(self):
        # skewed: a few heavy hitters, a long tail of addresses seen a few times
        return self.pool[int(len(self.pool) * self.r.random() ** 2)]

    def pick_kind(self):
        return self.r.choices(self.kinds, self.kind_w)[0]

    def generate(self, n, start_epoch, span, stats=None):
        """yield n lines (no newline) whose timestamps rise from start_epoch over span seconds."""
        r = self.r
        step = span / max(n, 1)
        for i in range(n):
            ts = syslog_ts(start_epoch + int(i * step))
            if r.random() < self.fail_ratio:
                ip = self.pick_attacker()
                kind = self.pick_kind()
                if stats is not None:
                    stats["kind"][kind] += 1
                    stats["per_jail_ip"][KIND_JAIL[kind]][ip] += 1
                yield self.failure(ts, ip, kind)
            else:
                if stats is not None:
                    stats["kind"]["benign"] += 1
                yield self.benign(ts)


def new_stats():
    return {
        "kind": collections.Counter(),
        "per_jail_ip": {
            "postfix": collections.Counter(),
            "dovecot": collections.Counter(),
            "exim": collections.Counter(),
        },
    }


def summarize(stats, maxretry=5):
    out = {"lines_by_kind": dict(stats["kind"])}
    for jail, c in stats["per_jail_ip"].items():
        out[jail] = {
            "matching_lines": sum(c.values()),
            "distinct_ips": len(c),
            "ips_ge_maxretry": sum(1 for v in c.values() if v >= maxretry),
            "maxretry": maxretry,
        }
    allips = set()
    for c in stats["per_jail_ip"].values():
        allips.update(c)
    out["distinct_attacker_ips"] = len(allips)
    out["distinct_attacker_ipv6"] = sum(1 for a in allips if ":" in a)
    return out


def main():
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("-n", "--lines", type=int, default=100000)
    ap.add_argument("-o", "--out", default="-")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--attackers", type=int, default=20000)
    ap.add_argument("--fail-ratio", type=float, default=0.10)
    ap.add_argument("--v6-frac", type=float, default=0.3)
    ap.add_argument(
        "--start",
        default="2026-11-22T00:00:00",
        help="first timestamp: 'now', epoch seconds, or YYYY-MM-DDTHH:MM:SS local time",
    )
    ap.add_argument("--span", type=float, default=86400.0, help="seconds the timestamps cover")
    ap.add_argument("--maxretry", type=int, default=5, help="only for the stats sidecar")
    a = ap.parse_args()
    if a.start == "now":
        start = time.time() - a.span
    elif a.start.replace(".", "").isdigit():
        start = float(a.start)
    else:
        start = time.mktime(time.strptime(a.start, "%Y-%m-%dT%H:%M:%S"))
    g = MailLogGen(a.seed, a.attackers, a.fail_ratio, a.v6_frac)
    st = new_stats()
    f = sys.stdout if a.out == "-" else open(a.out, "w")
    buf = []
    for line in g.generate(a.lines, start, a.span, st):
        buf.append(line)
        if len(buf) >= 10000:
            f.write("\n".join(buf) + "\n")
            buf = []
    if buf:
        f.write("\n".join(buf) + "\n")
    if f is not sys.stdout:
        f.close()
        with open(a.out + ".json", "w") as j:
            json.dump(summarize(st, a.maxretry), j, indent=1)
    print(json.dumps(summarize(st, a.maxretry)), file=sys.stderr)


if __name__ == "__main__":
    main()
