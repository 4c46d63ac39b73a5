"""End to end: ban mails from the real daemon to a real SMTP server (aiosmtpd on loopback),
whois from fake RIR servers on loopback (IANA-style referral included), and `sendmail -t`
through a fake sendmail script. The daemon runs with --dry-run."""

from __future__ import annotations

import contextlib
import email
import email.policy
import os
import shutil
import socket
import socketserver
import stat
import threading
import time
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from tests.e2e.daemon import LOOPBACK, Daemon, free_port, logger, wait_for

pytestmark = pytest.mark.skipif(shutil.which("logger") is None, reason="util-linux logger missing")

RIPE = (
    "% Abuse contact for '203.0.113.0 - 203.0.113.255' is 'abuse@example.net'\n\n"
    "inetnum:        203.0.113.0 - 203.0.113.255\n"
    "netname:        EXAMPLE-NET\ncountry:        NL\n"
    "remarks:        $(touch /tmp/applianced-pwned); `id` | rm -rf / & ~!\n"
    ".\n"
)


class Inbox:
    """aiosmtpd handler: keeps every message it accepts."""

    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        msg = email.message_from_bytes(envelope.content, policy=email.policy.default)
        self.messages.append(msg)  # type: ignore[arg-type]
        return "250 OK"


class Smtp:
    def __init__(self, port: int) -> None:
        self.port = port
        self.inbox = Inbox()
        self.controller: Controller | None = None

    def start(self) -> Smtp:
        self.controller = Controller(self.inbox, hostname="127.0.0.1", port=self.port)
        self.controller.start()
        return self

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()
            self.controller = None


class _Whois(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        query = self.request.recv(1024)
        answer = self.server.answer  # type: ignore[attr-defined]
        if answer is None:  # hang: never answer, until the client gives up
            self.request.settimeout(30)
            with contextlib.suppress(OSError):
                self.request.recv(1)
            return
        self.server.queries.append(query)  # type: ignore[attr-defined]
        self.request.sendall(answer.encode())


def whois_server(answer: str | None) -> socketserver.ThreadingTCPServer:
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Whois)
    server.daemon_threads = True
    server.answer = answer  # type: ignore[attr-defined]
    server.queries = []  # type: ignore[attr-defined]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


CONFIG = (
    LOOPBACK
    + """
[defaults]
bantime = "1h"
findtime = "10m"
maxretry = {maxretry}

[jails.sshd]
filter = "sshd"
ports = [22]
notify = ["mail-whois-lines"]

[notify]
to = ["admin@example.org"]
from = "appliance@example.org"
smarthost = "127.0.0.1"
port = {smtp}
starttls = "{starttls}"
max_per_minute = {per_minute}
digest_interval = "2s"
retry_first = "1s"
retry_max = "2s"
timeout = "5s"
whois_server = "127.0.0.1:{iana}"
whois_timeout = "2s"
{extra}

[notify.whois_servers]
"whois.ripe.net" = "127.0.0.1:{ripe}"
"""
)


@pytest.fixture
def world(tmp_path: Path) -> Iterator[dict[str, Any]]:
    iana = whois_server("refer:        whois.ripe.net\n\nwhois:        whois.ripe.net\n")
    ripe = whois_server(RIPE)
    smtp = Smtp(free_port())
    made: list[Daemon] = []

    def daemon(**kw: Any) -> tuple[Daemon, int]:
        port = free_port()
        values = {
            "port": port,
            "smtp": smtp.port,
            "iana": iana.server_address[1],
            "ripe": ripe.server_address[1],
            "starttls": "off",
            "per_minute": 10,
            "maxretry": 3,
            "extra": "",
            **kw,
        }
        d = Daemon(tmp_path, CONFIG.format(**values))
        made.append(d)
        return d.start(), port

    try:
        yield {"daemon": daemon, "smtp": smtp, "iana": iana, "ripe": ripe, "tmp": tmp_path}
    finally:
        for d in made:
            d.stop()
        smtp.stop()
        iana.shutdown()
        ripe.shutdown()


def fail(port: int, address: str, n: int = 3) -> None:
    for _ in range(n):
        logger(
            port,
            f"Failed password for invalid user admin from {address} port 4242 ssh2",
            tag="sshd",
            extra=("--rfc3164",),
        )


def settled(d: Daemon) -> dict[str, Any]:
    """The notifier's status once it holds nothing: every ban handed to it mailed (or dropped),
    no mail queued or retrying, no digest pending. A mail still to come would show here."""

    def idle() -> dict[str, Any] | None:
        n: dict[str, Any] = d.ctl("status")["notify"]
        quiet = not (n["backlog"] or n["queued_mails"] or n["in_next_digest"] or n["retrying"])
        return n if quiet else None

    return wait_for("the notifier to have nothing left to send", idle)


def storm(port: int, count: int) -> None:
    """``count`` failures from ``count`` addresses over one TCP connection (LF framing)."""
    lines = b"".join(
        b"<38>Nov 22 10:00:01 mx sshd[1]: Failed password for root from 10.%d.%d.%d port 1 ssh2\n"
        % (i // 65536, i // 256 % 256, i % 256)
        for i in range(count)
    )
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(lines)


def text(msg: EmailMessage) -> str:
    part = msg.get_body()
    assert part is not None
    return str(part.get_content())


def whole(path: Path) -> str:
    msg = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    return text(msg) if msg.get_body() is not None else ""  # type: ignore[arg-type]


def test_a_ban_mails_once_with_headers_whois_and_lines(world: dict[str, Any]) -> None:
    """logger failures -> one mail: subject, headers, whois via referral, the matched lines."""
    world["smtp"].start()
    d, port = world["daemon"]()
    fail(port, "203.0.113.7")
    inbox = world["smtp"].inbox.messages
    wait_for("the ban mail", lambda: inbox)
    msg = inbox[0]
    assert msg["Subject"] == "[applianced] sshd: banned 203.0.113.7 (1st ban, 1h)"
    assert msg["Auto-Submitted"] == "auto-generated", msg.as_string()[:800]
    assert msg["Message-ID"] and msg["Date"]
    assert msg["From"] == "appliance@example.org" and msg["To"] == "admin@example.org"
    body = text(msg)
    assert "netname:  EXAMPLE-NET" in body and "country:  NL" in body
    assert "abuse:    abuse@example.net" in body and "Whois (whois.ripe.net)" in body
    assert body.count("Failed password for invalid user admin from 203.0.113.7") == 3
    assert "[127.0.0.1]" in body
    assert world["iana"].queries == [b"203.0.113.7\r\n"] == world["ripe"].queries
    notify = settled(d)  # nothing else is coming
    assert len(inbox) == 1 and notify["sent"] == 1


def test_storm_of_500_bans_gives_n_mails_plus_digests_listing_all(world: dict[str, Any]) -> None:
    """500 bans in a burst: at most max_per_minute single mails; digests list the rest."""
    world["smtp"].start()
    d, port = world["daemon"](maxretry=1, per_minute=10)
    storm(port, 500)
    wait_for("500 bans", lambda: len(d.ctl("banned")) == 500, timeout=30)
    inbox = world["smtp"].inbox.messages

    def reported() -> set[str]:
        seen = set()
        for m in inbox:
            if "digest" in m["Subject"]:
                seen |= {w for w in text(m).split() if w.startswith("10.")}
            else:
                seen.add(m["Subject"].split("banned ")[1].split(" ")[0])
        return seen

    wait_for("every ban reported", lambda: len(reported()) == 500, timeout=30)
    singles = [m for m in inbox if "digest" not in m["Subject"]]
    digests = [m for m in inbox if "digest" in m["Subject"]]
    assert len(singles) <= 10 and digests
    assert sum(int(m["Subject"].split(": ")[1].split()[0]) for m in digests) == 500 - len(singles)
    assert d.ctl("status")["notify"]["dropped"] == 0


def test_a_restart_with_active_bans_mails_nothing(world: dict[str, Any]) -> None:
    """Bans restored at start are not mailed again."""
    world["smtp"].start()
    d, port = world["daemon"]()
    fail(port, "203.0.113.7")
    fail(port, "203.0.113.8")
    inbox = world["smtp"].inbox.messages
    wait_for("two mails", lambda: len(inbox) == 2)
    d.kill()
    d.start()
    assert len(d.ctl("banned")) == 2
    fail(port, "203.0.113.9")  # a new ban after the restart proves mail still works
    wait_for("the new ban's mail", lambda: len(inbox) == 3)
    settled(d)  # the restored bans, had they been handed to the notifier, would be mailed by now
    assert len(inbox) == 3 and "203.0.113.9" in inbox[2]["Subject"]


def test_starttls_required_without_starttls_fails_and_is_reported(world: dict[str, Any]) -> None:
    """The server offers no STARTTLS: no mail, the daemon lives, status and log say why."""
    world["smtp"].start()
    d, port = world["daemon"](starttls="required")
    fail(port, "203.0.113.7")
    notify = wait_for(
        "a failed delivery", lambda: (n := d.ctl("status")["notify"])["failed_attempts"] and n
    )
    assert notify["retrying"] and "TLS" in notify["last_error"]
    assert world["smtp"].inbox.messages == []
    assert "cannot mail sshd 203.0.113.7/32" in d.output
    rc, _, err = d.ctl_rc("notify", "test")
    assert rc == 1 and "NOT delivered" in err and "EHLO" in err
    assert d.ctl("status")["notify"]["backlog"] == 1  # kept for a retry, not lost


def test_smtp_down_then_back_bans_go_on_and_mails_arrive_after_backoff(
    world: dict[str, Any],
) -> None:
    """With the SMTP server down, 300 bans happen at full speed; mails arrive once it is up."""
    d, port = world["daemon"](maxretry=1, per_minute=5)
    started = time.monotonic()
    storm(port, 300)
    wait_for("300 bans while SMTP is down", lambda: len(d.ctl("banned")) == 300, timeout=30)
    banning = time.monotonic() - started
    notify = wait_for("failed attempts", lambda: (n := d.ctl("status")["notify"])["retrying"] and n)
    assert notify["backlog"] == 300 and notify["sent"] == 0
    assert banning < 20  # generous: the point is that nothing waits on the mail server
    world["smtp"].start()
    inbox = world["smtp"].inbox.messages
    wait_for("mails after backoff", lambda: d.ctl("status")["notify"]["backlog"] == 0, 30)
    assert 1 <= len([m for m in inbox if "digest" not in m["Subject"]]) <= 5
    assert any("digest" in m["Subject"] for m in inbox)


def test_a_hanging_whois_server_delays_only_by_its_timeout(world: dict[str, Any]) -> None:
    """whois never answers: the mail still arrives, after about whois_timeout, saying why."""
    world["smtp"].start()
    hang = whois_server(None)
    try:
        d, port = world["daemon"]()
        d.config.write_text(
            d.config.read_text().replace(
                f"127.0.0.1:{world['iana'].server_address[1]}",
                f"127.0.0.1:{hang.server_address[1]}",
            )
        )
        d.kill()
        d.start()
        started = time.monotonic()
        fail(port, "203.0.113.7")
        inbox = world["smtp"].inbox.messages
        wait_for("the mail despite whois", lambda: inbox, timeout=15)
        assert time.monotonic() - started < 10
        assert "Whois: whois unavailable: no answer within 2s" in text(inbox[0])
    finally:
        hang.shutdown()


def test_notify_test_reports_the_smtp_dialogue(world: dict[str, Any]) -> None:
    """`appliancectl notify test` delivers a test mail and prints the server's answers."""
    world["smtp"].start()
    d, _ = world["daemon"]()
    rc, out, err = d.ctl_rc("notify", "test")
    assert rc == 0, err
    assert "test mail delivered via smtp 127.0.0.1" in out and "<<< 250" in out
    assert world["smtp"].inbox.messages[0]["Subject"] == "[applianced] test mail"


def test_notify_test_preview_prints_a_ban_mail_and_sends_nothing(world: dict[str, Any]) -> None:
    """`notify test --preview` prints the headers and body a ban's mail would have, from
    sample data it labels, asking no whois server and sending no mail."""
    world["smtp"].start()
    d, _ = world["daemon"]()
    rc, out, err = d.ctl_rc("notify", "test", "--preview")
    assert rc == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("# preview: the mail a ban in jail sshd would send via smtp ")
    assert "NOT sent" in lines[0]
    assert "Subject: [applianced] sshd: banned 203.0.113.7 (1st ban, 1h)" in lines
    assert "From: appliance@example.org" in lines and "To: admin@example.org" in lines
    assert "Auto-Submitted: auto-generated" in lines
    iana = world["iana"].server_address[1]
    assert f"Whois: (preview: the answer of 127.0.0.1:{iana} for the address goes here; " in out
    assert "Matched lines (1 of 1, [sender] first):" in out
    assert lines[-1] == "applianced; `appliancectl why ADDR` tells more, `unban ADDR` lifts it."
    rc, _, err = d.ctl_rc("notify", "test", "--preview", "--jail", "web")
    assert rc != 0 and "jail 'web' sends no ban mail" in err and "jails that do: sshd" in err
    rc, _, err = d.ctl_rc("notify", "test", "--jail", "sshd")
    assert rc == 2 and "--jail goes with --preview" in err
    assert world["iana"].queries == [] and world["smtp"].inbox.messages == []


def test_sendmail_path_without_a_shell(world: dict[str, Any]) -> None:
    """sendmail -t gets the mail on stdin; shell metacharacters pass through verbatim."""
    tmp: Path = world["tmp"]
    out = tmp / "sendmail.out"
    script = tmp / "fake-sendmail"
    script.write_text(f'#!/bin/sh\necho "$@" > {tmp}/sendmail.args\ncat > {out}\n')
    script.chmod(stat.S_IRWXU)
    pwned = Path("/tmp/applianced-pwned")
    pwned.unlink(missing_ok=True)
    _, port = world["daemon"](extra=f'sendmail = "{script}"')
    fail(port, "203.0.113.7")
    wait_for("sendmail's output", lambda: out.exists() and out.stat().st_size > 0)
    wait_for("the whole mail", lambda: "applianced;" in whole(out))
    assert (tmp / "sendmail.args").read_text().split() == [
        "-t",
        "-oi",
        "-f",
        "appliance@example.org",
    ]
    msg = email.message_from_bytes(out.read_bytes(), policy=email.policy.default)
    assert msg["Subject"] == "[applianced] sshd: banned 203.0.113.7 (1st ban, 1h)"
    assert msg["To"] == "admin@example.org" and msg["Auto-Submitted"] == "auto-generated"
    body = text(msg)  # type: ignore[arg-type]
    assert "$(touch /tmp/applianced-pwned); `id` | rm -rf / & ~!" in body
    assert "\n   .\n" in body  # the lone '.' line of the whois answer is indented
    assert not pwned.exists()
    assert os.path.exists(script)


# -- STARTTLS with a certificate the test makes: ca_file, a foreign CA, AUTH over TLS --------


def tls_files(tmp: Path, name: str) -> dict[str, Path]:
    """A CA and a server certificate it signs for 127.0.0.1/localhost, made by the project's
    own ``tls init`` code: ``ca`` (the CA certificate), ``cert`` and ``key`` (the server's)."""
    from applianced.tlsinit import init_tls

    made = init_tls(tmp / f"{name}-tls", ["127.0.0.1", "localhost"])
    return {"ca": made.ca_cert, "cert": made.server_cert, "key": made.server_key}


class TlsInbox(Inbox):
    """An Inbox that also records, at every MAIL FROM and every accepted message, whether the
    session was under TLS then, and who had logged in (AUTH)."""

    def __init__(self) -> None:
        super().__init__()
        self.mail_from_tls: list[bool] = []
        self.data_tls: list[bool] = []
        self.users: list[bytes | None] = []

    async def handle_MAIL(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        self.mail_from_tls.append(session.ssl is not None)
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.data_tls.append(session.ssl is not None)
        auth = getattr(session, "auth_data", None)
        self.users.append(auth.login if session.authenticated and auth is not None else None)
        return await super().handle_DATA(server, session, envelope)


class TlsSmtp(Smtp):
    """aiosmtpd offering STARTTLS with ``files`` (from ``tls_files``), and AUTH PLAIN/LOGIN
    (only after STARTTLS) when ``logins`` maps user to password. The server does not itself
    insist on STARTTLS, so a client that sent in clear would be seen doing it."""

    def __init__(
        self, port: int, files: dict[str, Path], logins: dict[bytes, bytes] | None = None
    ) -> None:
        super().__init__(port)
        self.inbox: TlsInbox = TlsInbox()
        self.files = files
        self.logins = logins

    def _authenticate(
        self, server: Any, session: Any, envelope: Any, mechanism: str, data: Any
    ) -> Any:
        from aiosmtpd.smtp import AuthResult, LoginPassword

        ok = (
            self.logins is not None
            and isinstance(data, LoginPassword)
            and self.logins.get(data.login) == data.password
        )
        return AuthResult(success=ok, handled=False, auth_data=data if ok else None)

    def start(self) -> TlsSmtp:
        import ssl

        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.files["cert"], self.files["key"])
        auth: dict[str, Any] = (
            {"authenticator": self._authenticate, "auth_require_tls": True}
            if self.logins is not None
            else {}
        )
        self.controller = Controller(
            self.inbox,
            hostname="127.0.0.1",
            port=self.port,
            tls_context=context,
            require_starttls=False,
            **auth,
        )
        self.controller.start()
        return self


@pytest.fixture
def tls_smtp(world: dict[str, Any]) -> Iterator[Any]:
    """Start a ``TlsSmtp`` on the world's SMTP port: ``tls_smtp(files, logins=None)``."""
    made: list[TlsSmtp] = []

    def start(files: dict[str, Path], logins: dict[bytes, bytes] | None = None) -> TlsSmtp:
        server = TlsSmtp(world["smtp"].port, files, logins).start()
        made.append(server)
        return server

    try:
        yield start
    finally:
        for server in made:
            server.stop()


def test_starttls_required_with_ca_file_delivers_over_tls(
    world: dict[str, Any], tls_smtp: Any
) -> None:
    """starttls = "required" + ca_file = the test CA: the ban mail arrives, sent after STARTTLS."""
    files = tls_files(world["tmp"], "good")
    smtp = tls_smtp(files)
    d, port = world["daemon"](starttls="required", extra=f'ca_file = "{files["ca"]}"')
    fail(port, "203.0.113.7")
    inbox = smtp.inbox.messages
    wait_for("the ban mail over TLS", lambda: inbox)
    assert inbox[0]["Subject"] == "[applianced] sshd: banned 203.0.113.7 (1st ban, 1h)"
    assert smtp.inbox.mail_from_tls == [True] and smtp.inbox.data_tls == [True]
    assert smtp.inbox.users == [None]
    notify = d.ctl("status")["notify"]
    assert notify["sent"] == 1 and notify["failed_attempts"] == 0
    rc, out, err = d.ctl_rc("notify", "test")
    assert rc == 0, err
    assert "STARTTLS" in out and "<<< 220" in out
    assert smtp.inbox.mail_from_tls == [True, True] == smtp.inbox.data_tls


@pytest.mark.parametrize("ca", ["another CA in ca_file", "no ca_file"])
def test_starttls_required_with_a_foreign_certificate_refuses_to_send(
    world: dict[str, Any], tls_smtp: Any, ca: str
) -> None:
    """A server certificate the client cannot verify: no mail, never in clear; reported; up."""
    tmp: Path = world["tmp"]
    smtp = tls_smtp(tls_files(tmp, "server"))
    extra = f'ca_file = "{tls_files(tmp, "other")["ca"]}"' if ca != "no ca_file" else ""
    d, port = world["daemon"](starttls="required", extra=extra)
    fail(port, "203.0.113.7")
    notify = wait_for(
        "a failed delivery", lambda: (n := d.ctl("status")["notify"])["failed_attempts"] and n
    )
    assert notify["retrying"] and notify["sent"] == 0, notify
    assert "certificate verify failed" in notify["last_error"]
    assert "cannot mail sshd 203.0.113.7/32" in d.output
    rc, _, err = d.ctl_rc("notify", "test")
    assert rc == 1 and "NOT delivered" in err and "certificate verify failed" in err
    assert smtp.inbox.messages == [] and smtp.inbox.mail_from_tls == []  # not even MAIL FROM
    assert d.proc is not None and d.proc.poll() is None
    assert d.ctl("status")["notify"]["backlog"] == 1  # kept for a retry, not lost


def test_auth_over_starttls_with_a_credentials_file(world: dict[str, Any], tls_smtp: Any) -> None:
    """AUTH from a 0600 credentials file, after STARTTLS: the mail arrives as that user."""
    tmp: Path = world["tmp"]
    files = tls_files(tmp, "good")
    smtp = tls_smtp(files, logins={b"appliance": b"s3cret:with colon"})
    creds = tmp / "smtp.credentials"
    creds.write_text("appliance:s3cret:with colon\n")
    creds.chmod(0o600)
    extra = f'ca_file = "{files["ca"]}"\ncredentials_file = "{creds}"'
    d, port = world["daemon"](starttls="required", extra=extra)
    fail(port, "203.0.113.7")
    inbox = smtp.inbox.messages
    wait_for("the ban mail after AUTH", lambda: inbox)
    assert smtp.inbox.users == [b"appliance"] and smtp.inbox.data_tls == [True]
    assert smtp.inbox.mail_from_tls == [True]
    rc, out, err = d.ctl_rc("notify", "test")
    assert rc == 0, err
    assert "AUTH" in out and "<<< 235" in out and "s3cret" not in out
    assert smtp.inbox.users == [b"appliance", b"appliance"]
