"""Ban mails: storm control, digests, backoff, backlog bound, content and headers, the
Appliance hook (new bans only) and `notify test`. Driven with a task.Clock and a fake mailer."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from email.message import EmailMessage
from ipaddress import ip_network
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock

from applianced import views
from applianced.appliance import Appliance
from applianced.conf.schema import Config, NotifyConf
from applianced.control import Dispatcher
from applianced.enforcement.mailer import DeliveryError, redact
from applianced.enforcement.notify import Notifier
from applianced.enforcement.whois import WhoisClient
from applianced.errors import ApplianceError
from applianced.rules.decision import Ban, BanKind, IPAddress
from applianced.store.sqlite import SqliteOffenderStore
from applianced.testing import MemoryEnforcer
from tests.helpers import config, jail_conf, message, ssh_failure

T0 = 1_800_000_000.0
NOTIFY = NotifyConf(to=("admin@example.org",), sender="appliance@example.org")


class FakeMailer:
    """Records every send; answers with the next scripted outcome (default: delivered)."""

    description = "fake"

    def __init__(self) -> None:
        self.sent: list[EmailMessage] = []
        self.attempts: list[float] = []
        self.outcomes: list[Deferred[str] | Exception] = []
        self.clock: Clock | None = None

    def send(self, message: EmailMessage, sender: str, recipients: Sequence[str]) -> Deferred[str]:
        if self.clock is not None:
            self.attempts.append(self.clock.seconds())
        outcome = self.outcomes.pop(0) if self.outcomes else None
        if isinstance(outcome, Exception):
            return fail(outcome)
        if isinstance(outcome, Deferred):
            outcome.addCallback(lambda r: (self.sent.append(message), r)[1])
            return outcome
        self.sent.append(message)
        return succeed("250 OK")


def conf_with(
    tmp: Path, notify: NotifyConf = NOTIFY, actions: Any = ("mail-whois-lines",)
) -> Config:
    return replace(config(tmp, jail_conf(notify=tuple(actions))), notify=notify)


def make(
    tmp: Path, notify: NotifyConf = NOTIFY, whois: WhoisClient | None = None
) -> tuple[Notifier, Clock, FakeMailer]:
    clock = Clock()
    clock.advance(T0)
    mailer = FakeMailer()
    mailer.clock = clock
    n = Notifier(conf_with(tmp, notify), clock, lambda c: mailer, lambda c: whois)
    return n, clock, mailer


def ban(i: int = 7, count: int = 1, at: float = T0, duration: float | None = 3600.0) -> Ban:
    return Ban(
        "sshd",
        ip_network(f"203.0.113.{i}/32"),
        at,
        None if duration is None else at + duration,
        BanKind.AUTO if duration else BanKind.BLACKLIST,
        count,
    )


def body(msg: EmailMessage) -> str:
    part = msg.get_body()
    assert part is not None
    return str(part.get_content())


def test_banned_only_queues_and_mail_goes_out_later(tmp_path: Path) -> None:
    """The hot-path call sends nothing; the mail leaves on a later reactor turn."""
    n, clock, mailer = make(tmp_path)
    n.banned(ban(), ("[127.0.0.1] mx sshd[1]: Failed password",))
    assert mailer.sent == [] and n.status()["backlog"] == 1
    clock.advance(0)
    clock.advance(0)
    assert len(mailer.sent) == 1 and n.status()["backlog"] == 0 and n.stats.sent == 1


def test_jail_without_notify_is_not_mailed(tmp_path: Path) -> None:
    """A ban in a jail whose notify list is empty is ignored."""
    clock, mailer = Clock(), FakeMailer()
    n = Notifier(conf_with(tmp_path, actions=()), clock, lambda c: mailer)
    n.banned(ban(), ())
    clock.advance(1)
    assert mailer.sent == [] and n.status()["backlog"] == 0


def test_storm_sends_at_most_n_singles_then_one_digest_listing_the_rest(tmp_path: Path) -> None:
    """50 bans at once: max_per_minute single mails, the other 40 in one digest per interval."""
    n, clock, mailer = make(tmp_path, replace(NOTIFY, max_per_minute=10, digest_interval=120))
    for i in range(50):
        n.banned(ban(i), ())
    for _ in range(60):
        clock.advance(0)
    assert len(mailer.sent) == 10
    clock.advance(120)
    for _ in range(5):
        clock.advance(0)
    assert len(mailer.sent) == 11
    digest = mailer.sent[-1]
    assert digest["Subject"] == "[applianced] digest: 40 bans in sshd"
    listed = body(digest)
    singles = {m["Subject"].split("banned ")[1].split(" ")[0] for m in mailer.sent[:10]}
    for i in range(50):
        assert (f"203.0.113.{i} " in listed) != (f"203.0.113.{i}" in singles)
    assert n.status()["backlog"] == 0 and n.stats.digests == 1


def test_rate_window_slides(tmp_path: Path) -> None:
    """After a minute, single mails are allowed again."""
    n, clock, mailer = make(tmp_path, replace(NOTIFY, max_per_minute=2, digest_interval=600))
    for i in range(3):
        n.banned(ban(i), ())
    clock.advance(0)
    clock.advance(61)
    n.banned(ban(9), ())
    for _ in range(10):
        clock.advance(0)
    assert len(mailer.sent) == 3  # 2 singles, then the 4th ban alone; the 3rd waits for a digest


def test_failed_delivery_is_retried_with_doubling_backoff(tmp_path: Path) -> None:
    """Two failures, then success: retried after retry_first, then twice that."""
    n, clock, mailer = make(tmp_path, replace(NOTIFY, retry_first=30, retry_max=45))
    mailer.outcomes = [DeliveryError("connection refused"), DeliveryError("connection refused")]
    n.banned(ban(), ())
    clock.advance(0)
    assert n.status()["retrying"] and n.status()["last_error"] == "connection refused"
    for _ in range(6):
        clock.advance(15)
    clock.advance(0)
    assert mailer.attempts == [T0, T0 + 30, T0 + 75]  # 30 s, then min(60, retry_max=45)
    assert len(mailer.sent) == 1 and n.stats.failed_attempts == 2 and n.status()["backlog"] == 0


def test_refused_mail_is_dropped_not_retried(tmp_path: Path) -> None:
    """A permanent refusal (5xx) drops that mail and goes on with the next."""
    n, clock, mailer = make(tmp_path)
    mailer.outcomes = [DeliveryError("550 no such user", permanent=True)]
    n.banned(ban(1), ())
    n.banned(ban(2), ())
    for _ in range(5):
        clock.advance(0)
    assert n.stats.rejected == 1 and len(mailer.sent) == 1 and n.status()["backlog"] == 0


def test_backlog_is_bounded_and_drops_are_counted_and_reported(tmp_path: Path) -> None:
    """With delivery stuck, bans beyond the backlog are dropped; the digest says how many."""
    notify = replace(NOTIFY, backlog=5, max_per_minute=1, digest_interval=10)
    n, clock, mailer = make(tmp_path, notify)
    stuck: Deferred[str] = Deferred()
    mailer.outcomes = [stuck]
    for i in range(20):
        n.banned(ban(i), ())
    clock.advance(0)
    assert n.stats.dropped == 15 and n.status()["backlog"] == 5
    stuck.callback("250 OK")
    clock.advance(10)
    for _ in range(5):
        clock.advance(0)
    assert len(mailer.sent) == 2
    assert "15 more bans were not reported" in body(mailer.sent[1])
    assert n.status()["backlog"] == 0


def test_whois_failure_never_holds_the_mail_back(tmp_path: Path) -> None:
    """A whois server that never answers: the mail leaves after whois_timeout, saying so."""
    clock = Clock()
    clock.advance(T0)
    hang: list[Deferred[bytes]] = []

    def query(host: str, port: int, text: str) -> Deferred[bytes]:
        hang.append(Deferred())
        return hang[-1]

    whois = WhoisClient(clock, query, timeout=5)
    mailer = FakeMailer()
    n = Notifier(conf_with(tmp_path), clock, lambda c: mailer, lambda c: whois)
    n.banned(ban(), ("[127.0.0.1] line",))
    clock.advance(0)
    assert mailer.sent == []
    clock.advance(5)
    clock.advance(0)
    assert len(mailer.sent) == 1
    assert "Whois: whois unavailable: no answer within 5s" in body(mailer.sent[0])


def test_appliance_mails_new_bans_but_not_restored_ones(tmp_path: Path) -> None:
    """Bans restored at start are not mailed again; a new ban after the restart is."""
    conf = conf_with(tmp_path)
    mailers = []
    for attackers in (("203.0.113.7", "203.0.113.8"), ("203.0.113.9",)):
        clock = Clock()
        clock.advance(T0 + len(mailers))
        mailer = FakeMailer()
        mailers.append(mailer)
        store = SqliteOffenderStore(tmp_path / "offenders.sqlite")
        notifier = Notifier(conf, clock, lambda c, m=mailer: m)  # type: ignore[misc]
        app = Appliance(conf, store, MemoryEnforcer(), clock, notifier=notifier)
        app.start()
        clock.advance(0)
        for address in attackers:
            for _ in range(3):
                app.receive(message(ssh_failure(address), at=clock.seconds()))
        for _ in range(5):
            clock.advance(0)
        app.stop()
    assert [m["Subject"].split(": ", 1)[1] for m in mailers[1].sent] == [
        "banned 203.0.113.9 (1st ban, 1m40s)"
    ]
    assert len(mailers[0].sent) == 2
    assert "Failed password for root from 203.0.113.9" in body(mailers[1].sent[0])


def test_manual_ban_is_mailed_and_status_reports_notify(tmp_path: Path) -> None:
    """`appliancectl ban` goes through the same hook; status carries the notifier's counters."""
    clock = Clock()
    clock.advance(T0)
    mailer = FakeMailer()
    conf = conf_with(tmp_path)
    notifier = Notifier(conf, clock, lambda c: mailer)
    store = SqliteOffenderStore(tmp_path / "offenders.sqlite")
    app = Appliance(conf, store, MemoryEnforcer(), clock, notifier=notifier)
    app.start()
    views.ban(app, "sshd", "198.51.100.4")
    for _ in range(3):
        clock.advance(0)
    assert "banned 198.51.100.4" in mailer.sent[0]["Subject"]
    assert views.status(app)["notify"]["sent"] == 1


def test_notify_test_verb_answers_with_the_outcome_or_the_error(tmp_path: Path) -> None:
    """The control verb returns a Deferred answer: the dialogue, or the error with transcript."""
    clock = Clock()
    clock.advance(T0)
    mailer = FakeMailer()
    conf = conf_with(tmp_path)
    notifier = Notifier(conf, clock, lambda c: mailer)
    store = SqliteOffenderStore(tmp_path / "offenders.sqlite")
    app = Appliance(conf, store, MemoryEnforcer(), clock, notifier=notifier)
    dispatcher = Dispatcher(app)
    answers: list[Any] = []
    result = dispatcher.handle({"verb": "notify_test"})
    assert isinstance(result, Deferred)
    result.addCallback(answers.append)
    assert answers[0]["ok"] and answers[0]["result"]["dialogue"] == "250 OK"
    assert mailer.sent[0]["Subject"] == "[applianced] test mail"
    mailer.outcomes = [DeliveryError("502 no STARTTLS", transcript="<<< 250 HELP")]
    d = dispatcher.handle({"verb": "notify_test"})
    assert isinstance(d, Deferred)
    d.addCallback(answers.append)
    assert not answers[1]["ok"] and "NOT delivered" in answers[1]["error"]
    assert "<<< 250 HELP" in answers[1]["error"]


@pytest.mark.parametrize(
    ("actions", "whois", "says"),
    [
        (("mail-whois-lines",), "whois.iana.org", "Whois: (preview: the answer of whois.iana.org"),
        (("mail-whois",), "", "Whois: whois unavailable: disabled (whois_server is empty)"),
        (("mail",), "whois.iana.org", None),
    ],
)
def test_the_preview_is_a_ban_mail_from_labelled_samples_and_sends_nothing(
    tmp_path: Path, actions: tuple[str, ...], whois: str, says: str | None
) -> None:
    """The verb answers with the headers and body the jail's ban mail would have: a sample
    address and line said to be samples, whois as the jail asks for it (never asked)."""
    clock = Clock()
    clock.advance(T0)
    mailer = FakeMailer()
    conf = conf_with(tmp_path, replace(NOTIFY, whois_server=whois), actions)
    notifier = Notifier(conf, clock, lambda c: mailer)
    store = SqliteOffenderStore(tmp_path / "offenders.sqlite")
    app = Appliance(conf, store, MemoryEnforcer(), clock, notifier=notifier)
    answer = Dispatcher(app).handle({"verb": "notify_preview"})
    assert isinstance(answer, dict) and answer["ok"], answer
    preview = answer["result"]
    assert (preview["jail"], preview["address"], preview["via"]) == ("sshd", "203.0.113.7", "fake")
    headers = dict(preview["headers"])
    assert headers["Subject"] == "[applianced] sshd: banned 203.0.113.7 (1st ban, 1m40s)"
    assert headers["To"] == "admin@example.org"
    assert headers["Auto-Submitted"] == "auto-generated"
    text = preview["body"]
    assert "Jail:         sshd" in text and "Address:      203.0.113.7/32" in text
    assert (says in text) if says else ("Whois" not in text)
    assert ("(preview: the lines that matched 203.0.113.7 go here)" in text) == (
        "mail-whois-lines" in actions
    )
    clock.advance(60)
    assert mailer.sent == [] and notifier.stats.sent == 0


def test_the_preview_names_the_jails_that_mail(tmp_path: Path) -> None:
    clock = Clock()
    notifier = Notifier(conf_with(tmp_path), clock, lambda c: FakeMailer())
    with pytest.raises(ApplianceError, match=r"jail 'web' sends no ban mail.*jails that do: sshd"):
        notifier.preview("web")
    quiet = Notifier(conf_with(tmp_path, actions=()), clock, lambda c: FakeMailer())
    with pytest.raises(ApplianceError, match="no enabled jail sets notify"):
        quiet.preview()


def test_transcript_redacts_credentials() -> None:
    """AUTH arguments and answers to 334 challenges never reach a log or the CLI."""
    text = (
        "<<< 250 AUTH LOGIN PLAIN\n>>> AUTH PLAIN AGJvYgBzZWNyZXQ=\n<<< 334 VXNlcm5hbWU6\n>>> Ym9i"
    )
    out = redact(text)
    assert "AGJvYgBzZWNyZXQ=" not in out and "Ym9i" not in out
    assert ">>> AUTH PLAIN <redacted>" in out


@pytest.mark.parametrize("reverse", [True, False])
def test_reverse_dns_only_when_enabled(tmp_path: Path, reverse: bool) -> None:
    """The PTR lookup runs (and shows) only with reverse_dns = true."""
    clock = Clock()
    asked: list[IPAddress] = []

    def ptr(address: IPAddress) -> Deferred[str]:
        asked.append(address)
        return succeed("mail.example.net")

    mailer = FakeMailer()
    conf = conf_with(tmp_path, replace(NOTIFY, reverse_dns=reverse), ("mail",))
    n = Notifier(conf, clock, lambda c: mailer, reverse=ptr)
    n.banned(ban(), ())
    clock.advance(0)
    clock.advance(0)
    assert bool(asked) == reverse
    assert ("Reverse DNS:  mail.example.net" in body(mailer.sent[0])) == reverse


# -- configuration ----------------------------------------------------------------------------

BASE = """\
[[listeners]]
port = 5514

[jails.sshd]
filter = "sshd"
notify = ["mail-whois-lines"]
"""


def test_notify_section_is_parsed(tmp_path: Path) -> None:
    """[notify] keys and the jail's notify list reach the Config."""
    from applianced.conf.load import parse_config

    text = BASE + (
        '\n[notify]\nto = ["a@example.org", "b@example.org"]\nfrom = "f@example.org"\n'
        'smarthost = "mx.example.org"\nport = 587\nstarttls = "required"\n'
        'max_per_minute = 3\ndigest_interval = "10m"\nwhois_server = "127.0.0.1:4343"\n'
        '[notify.whois_servers]\n"whois.ripe.net" = "127.0.0.1:4344"\n'
    )
    conf = parse_config(text, tmp_path / "a.toml")
    assert conf.jails[0].notify == ("mail-whois-lines",)
    n = conf.notify
    assert n.to == ("a@example.org", "b@example.org") and n.sender == "f@example.org"
    assert (n.smarthost, n.port, n.starttls) == ("mx.example.org", 587, "required")
    assert (n.max_per_minute, n.digest_interval) == (3, 600.0)
    assert n.whois_servers == (("whois.ripe.net", "127.0.0.1:4344"),)


@pytest.mark.parametrize(
    ("extra", "key", "says"),
    [
        ('\n[notify]\nto = ["a@example.org"]\nbogus = 1\n', "notify.bogus", "unknown key"),
        ('\n[notify]\nto = ["not an address"]\n', "notify.to[0]", "not a mail address"),
        ('\n[notify]\nto = ["a@b.c"]\nstarttls = "maybe"\n', "notify.starttls", "one of"),
        ("", "notify.to", "sets no 'to'"),
    ],
)
def test_notify_config_errors_name_the_key(tmp_path: Path, extra: str, key: str, says: str) -> None:
    """Bad [notify] settings are refused with the file, the key and what is allowed."""
    from applianced.conf.load import parse_config
    from applianced.errors import ConfigError

    with pytest.raises(ConfigError) as e:
        parse_config(BASE + extra, tmp_path / "a.toml")
    assert key in str(e.value) and says in str(e.value) and "a.toml" in str(e.value)


def test_jail_notify_value_is_checked(tmp_path: Path) -> None:
    """notify = ["sms"] names the jail's key, its line and the allowed actions."""
    from applianced.conf.load import parse_config
    from applianced.errors import ConfigError

    text = BASE.replace('"mail-whois-lines"', '"sms"') + '\n[notify]\nto = ["a@b.c"]\n'
    with pytest.raises(ConfigError) as e:
        parse_config(text, tmp_path / "a.toml")
    assert "jails.sshd.notify" in str(e.value) and "'mail-whois-lines'" in str(e.value)
    assert ":6" in str(e.value)


def test_credentials_file_must_be_private(tmp_path: Path) -> None:
    """A group- or world-readable credentials file is refused with the chmod to run."""
    from applianced.conf.load import parse_config
    from applianced.errors import ConfigError

    secret = tmp_path / "smtp.cred"
    secret.write_text("user:pw\n")
    secret.chmod(0o644)
    text = BASE + (
        f'\n[notify]\nto = ["a@b.c"]\nstarttls = "required"\ncredentials_file = "{secret}"\n'
        'smarthost = "mx.example.org"\n'
    )
    with pytest.raises(ConfigError) as e:
        parse_config(text, tmp_path / "a.toml")
    assert "readable by group or others (mode 0644)" in str(e.value)
    assert "chmod 600" in str(e.value)
    secret.chmod(0o600)
    assert parse_config(text, tmp_path / "a.toml").notify.credentials_file == secret
    with pytest.raises(ConfigError) as e:
        parse_config(text.replace('"required"', '"off"'), tmp_path / "a.toml")
    assert "in clear" in str(e.value)
