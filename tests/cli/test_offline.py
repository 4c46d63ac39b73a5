"""appliancectl's offline verbs: check, parse, test-filter, and --help that teaches."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from applianced.bouncers import read_keys
from applianced.cli import main

DATA = Path(__file__).parents[1] / "data"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def corpus_log(tmp_path: Path, service: str) -> tuple[Path, dict[int, str]]:
    """The corpus rows of ``service`` as a log file, and the expected host per line number."""
    lines, expected = [], {}
    for row in (DATA / "mail-lines.tsv").read_text().splitlines():
        if row.startswith("#") or not row.strip():
            continue
        svc, want, line = row.split("\t", 2)
        if svc != service:
            continue
        lines.append(line)
        if want != "-":
            expected[len(lines)] = want
    path = tmp_path / f"{service}.log"
    path.write_text("\n".join(lines) + "\n")
    return path, expected


@pytest.mark.parametrize("service", ["postfix-sasl", "dovecot", "sshd"])
def test_test_filter_json_reports_each_failure_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, service: str
) -> None:
    """--json prints {"lineno", "host"} for exactly the corpus failures, summary on stderr."""
    log, expected = corpus_log(tmp_path, service)
    code, out, err = run(
        capsys, "--config", str(tmp_path / "none.toml"), "test-filter", service, str(log), "--json"
    )
    assert code == 0
    rows = [json.loads(line) for line in out.splitlines()][:-1]
    assert {r["lineno"]: r["host"] for r in rows} == expected
    assert f"matched {len(expected)}" in err and "lines/s" in err


def test_test_filter_human_report_and_missed_lines(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """Without --json: hits per regex; --missed lists the lines that did not match."""
    log, _ = corpus_log(tmp_path, "sshd")
    code, out, _ = run(capsys, "test-filter", "sshd", str(log), "--missed")
    assert code == 0
    assert "failregex #1" in out
    assert "missed" in out and "Accepted publickey" in out


def test_test_filter_unknown_filter_lists_choices(capsys: pytest.CaptureFixture[str]) -> None:
    """A wrong FILTER says which jails and shipped filters exist; exit 2."""
    code, _, err = run(capsys, "test-filter", "nope", "-")
    assert code == 2 and "postfix-sasl" in err


def test_parse_json_prints_one_object_per_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """parse --json: the nine fields per message, {"error": ...} for a bad one."""
    import io
    import sys

    stdin = b"<38>Nov 22 10:00:01 mx sshd[9]: hello\n<999>bad\n<34>1 - - - - - -\n"
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin)))
    code, out, _ = run(capsys, "parse", "--json")
    first, second, third = (json.loads(line) for line in out.splitlines())
    assert code == 0
    assert list(first) == [
        "facility",
        "severity",
        "timestamp",
        "hostname",
        "app_name",
        "procid",
        "msgid",
        "structured_data",
        "msg",
    ]
    assert (first["app_name"], first["procid"], first["msg"]) == ("sshd", "9", "hello")
    assert list(second) == ["error"]
    assert third["hostname"] is None and third["msg"] == ""


def test_check_accepts_the_shipped_config_and_reports_errors(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """check: OK with a summary, or the file:line error and exit 2."""
    from applianced.conf.load import DEFAULT_CONFIG

    code, out, _ = run(capsys, "check", "--config", str(DEFAULT_CONFIG))
    assert code == 0 and "OK" in out and "postfix-sasl" in out
    bad = tmp_path / "bad.toml"
    bad.write_text('[[listeners]]\nport = 514\n[jails.sshd]\nfilter = "sshd"\nmaxretyr = 3\n')
    code, _, err = run(capsys, "check", "--config", str(bad))
    assert code == 2 and f"{bad}:5" in err and "maxretry" in err


@pytest.mark.parametrize(
    "verb",
    [
        "status",
        "banned",
        "ban",
        "unban",
        "blacklist",
        "why",
        "flush",
        "reload",
        "check",
        "parse",
        "test-filter",
        "bouncer",
    ],
)
def test_every_verb_has_help_with_an_example(capsys: pytest.CaptureFixture[str], verb: str) -> None:
    """--help of each verb explains it and shows an example."""
    with pytest.raises(SystemExit) as info:
        main([verb, "--help"])
    out = capsys.readouterr().out
    assert info.value.code == 0 and "example:" in out and "appliancectl" in out


# A dovecot log as test-filter meets it: other programs, lines the routing gate drops (no
# literal of the filter), blank lines, other shapes (RFC 5424, no PID, CRLF), unparsable ones.
MIXED = (
    b"Nov 22 10:01:01 mx dovecot: imap-login: Disconnected (auth failed, 1 attempts in 2 secs):"
    b" user=<a@example.org>, method=PLAIN, rip=203.0.113.8, lip=192.0.2.1, session=<k2t5>\n"
    b"Nov 22 10:01:02 mx postfix/smtpd[1]: connect from unknown[198.51.100.1]\n"
    b"\n"
    b"Nov 22 10:01:03 mx dovecot: imap-login: Login: user=<bob>, rip=192.0.2.50, lip=192.0.2.1\n"
    b"   \t\r\n"
    b"<38>1 2026-11-22T10:01:04Z mx dovecot 7 - - auth-worker(7): sql(u,203.0.113.9,<x>):"
    b" Password mismatch\n"
    b"<38>1 2026-11-22T10:01:05Z mx postfix/smtpd 7 - - connect from unknown[192.0.2.7]\n"
    b"Nov 22 10:01:06 mx dovecot[]: auth: pam(u,203.0.113.10): pam_authenticate() failed:"
    b" Authentication failure\r\n"
    b"<999>not syslog\n"
    b"Nov 22 10:01:07 mx dovecot: auth: pam(u,203.0.113.11): unknown user\r\n"
    b"Nov 22 10:01:08 mx dovecot: imap-login: Disconnected (auth failed, 1 attempts):"
    b" user=<c>, method=PLAIN, rip=203.0.113.12, lip=192.0.2.1"
)


def test_test_filter_counts_a_mixed_log(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """Each non-blank line is counted once: matched, ignored, missed or of another program;
    the line numbers of --json and --missed are the file's (blank lines included)."""
    log = tmp_path / "mixed.log"
    log.write_bytes(MIXED)
    none = str(tmp_path / "none.toml")
    code, out, err = run(capsys, "--config", none, "test-filter", "dovecot", str(log), "--json")
    assert code == 0
    assert [json.loads(row) for row in out.splitlines()][:-1] == [
        {"lineno": 1, "host": "203.0.113.8", "user": "a@example.org"},
        {"lineno": 6, "host": "203.0.113.9", "user": "u"},
        {"lineno": 8, "host": "203.0.113.10", "user": "u"},
        {"lineno": 10, "host": "203.0.113.11", "user": "u"},
        {"lineno": 11, "host": "203.0.113.12", "user": "c"},
    ]
    assert "lines 9, matched 5, ignored 0, missed 2, other program 2 (" in err
    code, out, _ = run(capsys, "--config", none, "test-filter", "dovecot", str(log), "--missed")
    assert code == 0
    assert "Lines: 9 lines, 0 ignored, 5 matched, 2 missed, 2 of other programs" in out
    assert "failregex #1: [2 hits]" in out and "failregex #2: [3 hits]" in out
    assert out.splitlines()[-4:] == [
        "|- Missed line(s):",
        "|  4: Nov 22 10:01:03 mx dovecot: imap-login: Login: user=<bob>, rip=192.0.2.50,"
        " lip=192.0.2.1",
        "|  9: <999>not syslog",
        "`-",
    ]


def test_test_filter_with_a_fail2ban_filter_counts_each_outcome(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """A fail2ban .conf reads the line after its date (a syslog header, or the filter's own
    datepattern in a plain line): matched, ignored (ignoreregex and <F-NOFAIL>), missed, other
    programs; a line without a date is read whole."""
    log = tmp_path / "demo.log"
    log.write_bytes(
        b"Nov 22 10:00:01 mx demo[12]: auth failed for bob from 203.0.113.5\n"
        b"Nov 22 10:00:02 mx demo[12]: auth failed for bob from 192.0.2.99\n"
        b"Nov 22 10:00:03 mx demo-auth[12]: session opened for bob from 203.0.113.6\n"
        b"Nov 22 10:00:04 mx other[1]: auth failed for bob from 203.0.113.7\n"
        b"\n"
        b"Nov 22 10:00:05 mx demo[12]: hello\n"
        b"[22/Nov/2026 10:00:06] mx demo[12]: Info: LOCKED out 203.0.113.8\n"
        b"<999>auth failed for eve from 203.0.113.9\n"
    )
    conf = str(DATA / "f2b" / "demo.conf")
    code, out, err = run(
        capsys, "--config", str(tmp_path / "none.toml"), "test-filter", conf, str(log), "--missed"
    )
    assert code == 0
    assert "lines 7, matched 2, ignored 2, missed 2, other program 1 (" in err
    assert "Lines: 7 lines, 2 ignored, 2 matched, 2 missed, 1 of other programs" in out
    assert out.splitlines()[-4:] == [
        "|- Missed line(s):",
        "|  6: Nov 22 10:00:05 mx demo[12]: hello",
        "|  8: <999>auth failed for eve from 203.0.113.9",
        "`-",
    ]


def test_test_filter_reads_control_characters_escaped_as_the_daemon_does(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """A control character inside a line reaches the filter, --json and --missed as the
    parser escapes it for the daemon ("#" and three octal digits), dateless lines included."""
    log = tmp_path / "controls.log"
    log.write_bytes(
        b"Nov 22 10:00:01 mx demo[12]: auth failed for eve\x1bx from 203.0.113.5\n"
        b"demo[12]: auth failed for mal\x07lory from 203.0.113.9\n"
        b"Nov 22 10:00:05 mx demo[12]: hello\x1b[2J\x00\n"
    )
    conf = str(DATA / "f2b" / "demo.conf")
    none = str(tmp_path / "none.toml")
    code, out, _ = run(capsys, "--config", none, "test-filter", conf, str(log), "--json")
    assert code == 0
    assert [json.loads(row) for row in out.splitlines()][:-1] == [
        {"lineno": 1, "host": "203.0.113.5", "user": "eve#033x"},
        {"lineno": 2, "host": "203.0.113.9", "user": "mal#007lory"},
    ]
    code, out, _ = run(capsys, "--config", none, "test-filter", conf, str(log), "--missed")
    assert code == 0
    assert out.splitlines()[-2] == "|  3: Nov 22 10:00:05 mx demo[12]: hello#033[2J#000"


def test_test_filter_dates_plain_lines_and_says_by_which_form(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """Kerio's own Security log, read with the shipped kerio filter: its datepattern cuts the
    bracketed date, --json gives each failure's time, and the summary counts the forms."""
    log = tmp_path / "security.log"
    log.write_bytes(
        b"[17/Jun/2011 17:00:45] SMTP Spam attack detected from 192.0.2.7, client closed "
        b"connection before SMTP greeting\n"
        b"[17/Jun/2011 17:00:46] IMAP: User alice@example.org logged in from 192.0.2.8\n"
    )
    code, out, err = run(
        capsys, "--config", str(tmp_path / "none.toml"), "test-filter", "kerio", str(log), "--json"
    )
    assert code == 0
    assert json.loads(out.splitlines()[0]) == {
        "lineno": 1,
        "host": "192.0.2.7",
        "time": "2011-06-17T17:00:45",
    }
    assert "dates of the lines examined: 2 by ^\\[%d/%b/%Y %H:%M:%S\\] ?" in err


REMOTE = """\
[receiver]
allowed_senders = ["127.0.0.1/32", "192.0.2.10/32"]

[[listeners]]
transport = "udp"
address = "0.0.0.0"
port = 5514

[jails.sshd]
filter = "sshd"
{extra}
"""


@pytest.mark.parametrize(
    ("extra", "warns"),
    [
        ("", True),
        ('hook = "forward"', False),
        ('[decisions]\naddress = "127.0.0.1"', False),
    ],
)
def test_check_warns_of_remote_senders_banned_only_here(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, extra: str, warns: bool
) -> None:
    """Remote mail servers send, every jail drops at input and no bouncer pulls: a warning
    (exit 0), in --json too; gone with hook = "forward" or a [decisions] stream."""
    path = tmp_path / "appliance.toml"
    path.write_text(REMOTE.format(extra=extra))
    code, out, err = run(capsys, "check", "--config", str(path))
    assert code == 0 and "OK" in out
    assert ("warning: listeners udp/0.0.0.0:5514 take syslog from remote senders" in err) == warns
    code, out, _ = run(capsys, "check", "--config", str(path), "--json")
    found = json.loads(out)["warnings"]
    assert len(found) == warns
    if warns:
        assert 'set hook = "forward"' in found[0] and "[decisions]" in found[0]


def test_check_does_not_warn_for_loopback_senders(capsys: pytest.CaptureFixture[str]) -> None:
    from applianced.conf.load import DEFAULT_CONFIG

    code, out, _ = run(capsys, "check", "--config", str(DEFAULT_CONFIG), "--json")
    assert code == 0 and json.loads(out)["warnings"] == []


def test_bouncer_add_list_remove_without_the_daemon(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """add prints the key once (the file holds its hash), list shows it without a daemon's
    last pull, remove revokes it."""
    path = tmp_path / "appliance.toml"
    path.write_text(MINIMAL_STATE.format(state=tmp_path) + '\n[decisions]\naddress = "127.0.0.1"\n')
    code, out, _ = run(capsys, "--config", str(path), "bouncer", "add", "mx1")
    # On loopback the bouncer runs on this host: the URL it was shown named no host it could
    # reach (THIS-APPLIANCE).
    assert code == 0 and "api_url: http://127.0.0.1:8080/" in out
    key = out.split("api_key: ")[1].strip()
    assert key not in (tmp_path / "bouncers.json").read_text()
    code, out, _ = run(capsys, "--config", str(path), "bouncer", "list", "--json")
    [listed] = json.loads(out)
    assert (listed["name"], listed["last_pull"]) == ("mx1", None)
    code, out, _ = run(capsys, "--config", str(path), "bouncer", "list")
    assert "mx1" in out and "not running" in out
    assert re.search(r"\b\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC\b", out)  # added, as last pulls
    code, _, err = run(capsys, "--config", str(path), "bouncer", "add", "mx1")
    assert code == 1 and "bouncer 'mx1' exists" in err
    code, _, err = run(capsys, "--config", str(path), "bouncer", "remove")
    assert code == 2 and "needs a NAME" in err
    code, _, err = run(capsys, "--config", str(path), "bouncer", "list", "mx1")
    assert code == 2 and "bouncer list takes no NAME" in err  # it was ignored
    assert run(capsys, "--config", str(path), "bouncer", "remove", "mx1")[0] == 0
    code, out, _ = run(capsys, "--config", str(path), "bouncer", "list", "--json")
    assert json.loads(out) == []
    path.write_text(MINIMAL_STATE.format(state=tmp_path / "missing"))
    code, _, err = run(capsys, "--config", str(path), "bouncer", "add", "mx1")
    assert code == 1 and f"cannot open {tmp_path / 'missing'}" in err


def test_bouncer_keys_stay_manageable_with_a_broken_config(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """One mistake in the file (the daemon runs on the config it loaded): add, list and
    remove read the state directory alone, as status finds the socket (they were refused
    with the file's errors)."""
    path = tmp_path / "appliance.toml"
    path.write_text(MINIMAL_STATE.format(state=tmp_path) + '\n[defaults]\nmaxretry = "3"\n')
    code, out, err = run(capsys, "--config", str(path), "bouncer", "add", "mx1")
    assert code == 0, err
    assert "api_key" not in out and "has mistakes (`appliancectl check` lists them)" in out
    code, out, _ = run(capsys, "--config", str(path), "bouncer", "list", "--json")
    assert code == 0 and [b["name"] for b in json.loads(out)] == ["mx1"]
    assert run(capsys, "--config", str(path), "bouncer", "remove", "mx1")[0] == 0
    assert read_keys(tmp_path) == {}


MINIMAL_STATE = """\
[daemon]
state_dir = "{state}"
control_socket = "{state}/control.sock"

[[listeners]]
transport = "udp"
address = "127.0.0.1"
port = 5514

[jails.sshd]
filter = "sshd"
"""


EXPLAIN_CONFIG = """\
[receiver]
allowed_senders = ["192.0.2.0/24"]

[[listeners]]
transport = "udp"
address = "127.0.0.1"
port = 5514

[jails.sshd]
filter = "sshd"
ports = [22]

[jails.dovecot]
filter = "dovecot"
ports = [143]
"""


def test_explain_with_a_config_walks_its_jails_offline(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """explain --config: how the line parsed, each jail's steps, the regex and what it took;
    a raw frame on stdin (rsyslog's RFC 5424 with its extra space) reads the same way, and an
    allowed sender's address is one no jail bans."""
    import io

    conf = tmp_path / "appliance.toml"
    conf.write_text(EXPLAIN_CONFIG)
    line = "Nov 22 10:00:01 mx sshd[1]: Failed password for root from 203.0.113.7 port 22 ssh2"
    code, out, _ = run(capsys, "explain", line, "--config", str(conf))
    assert code == 0
    assert "parsed as RFC 3164 with a BSD timestamp, no PRI" in out
    assert "jail sshd: failure" in out and "jail dovecot: unread" in out
    assert "took: host='203.0.113.7', user='root'" in out
    assert out.rstrip().endswith("=> a failure for sshd")
    frame = (
        "<13>1 2026-12-07T08:45:25+00:00 vm dovecot - - -  imap-login: Disconnected (auth "
        "failed, 1 attempts in 2 secs): user=<bob>, method=PLAIN, rip=192.0.2.7, lip=192.0.2.1\n"
    )
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(frame.encode())))
    code, out, _ = run(capsys, "explain", "--config", str(conf), "--json")
    result = json.loads(out)
    assert code == 0 and result["shape"] == "RFC 5424"
    (dovecot,) = [w for w in result["jails"] if w["jail"] == "dovecot"]
    assert dovecot["verdict"] == "never ban" and "192.0.2.0/24" in dovecot["steps"][-1]


def test_explain_of_nothing_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import io

    conf = tmp_path / "appliance.toml"
    conf.write_text(EXPLAIN_CONFIG)
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(b"\n")))
    code, _, err = run(capsys, "explain", "--config", str(conf))
    assert code == 2 and "give a log line or a syslog frame" in err
