"""appliancectl test-filter with fail2ban-regex's habits: an inline failregex and ignoreregex,
either argument order, the --print-all-* lists, the date-template summary and the hint when a
filter matches nothing."""

from __future__ import annotations

import io
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from applianced.cli import main

DATA = Path(__file__).parents[1] / "data"

# /var/log/maillog of the users' Kerio document: Kerio Connect logging through syslog.
MAILLOG = (
    "Nov 22 10:00:01 mx kerio[12]: 192.0.2.10 rejected: directory harvest attack\n"
    "Nov 22 10:00:02 mx kerio[12]: SMTP: User bob@example.org logged in\n"
    "Nov 22 10:00:03 mx kerio[12]: 192.0.2.11 rejected: directory harvest attack\n"
    "\n"
    "Nov 22 10:00:04 mx kerio[12]: 198.51.100.7 rejected: directory harvest attack by test\n"
)
HARVEST = "<HOST> rejected: directory harvest attack"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["--config", "/nonexistent/appliance.toml", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def rows(out: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.splitlines()]


@pytest.fixture
def in_tmp(tmp_path: Path) -> Iterator[Path]:
    """The test's directory as the working one, where relative arguments are looked up."""
    old = Path.cwd()
    os.chdir(tmp_path)
    try:
        yield tmp_path
    finally:
        os.chdir(old)


@pytest.fixture
def maillog(tmp_path: Path) -> Path:
    log = tmp_path / "maillog"
    log.write_text(MAILLOG)
    return log


def test_the_kerio_documents_command_form(
    capsys: pytest.CaptureFixture[str], maillog: Path
) -> None:
    """`test-filter /var/log/maillog '<HOST> rejected: directory harvest attack'`: the log
    first and an inline failregex, read as fail2ban-regex reads one (the whole line after its
    date, every program)."""
    code, out, err = run(capsys, "test-filter", str(maillog), HARVEST)
    assert code == 0, err
    assert f"|  failregex #1: [3 hits] {HARVEST}" in out
    assert "Lines: 4 lines, 0 ignored, 3 matched, 1 missed, 0 of other programs" in out
    code, out, _ = run(capsys, "test-filter", str(maillog), HARVEST, "--json")
    assert [(r["lineno"], r["host"]) for r in rows(out)[:-1]] == [
        (1, "192.0.2.10"),
        (3, "192.0.2.11"),
        (5, "198.51.100.7"),
    ]


def test_an_ignoreregex_third_as_a_regex_or_a_filter_file(
    capsys: pytest.CaptureFixture[str], maillog: Path, tmp_path: Path
) -> None:
    """IGNOREREGEX is a regex, or a fail2ban filter file whose ignoreregex is taken (the
    document's `fail2ban-regex maillog spam-attack.conf spam-attack.conf`)."""
    code, out, _ = run(capsys, "test-filter", str(maillog), HARVEST, "by test$")
    assert code == 0
    assert "Lines: 4 lines, 1 ignored, 2 matched, 1 missed" in out
    assert "   ignoreregex #1: by test$" in out
    conf = tmp_path / "spam-harvest.conf"
    conf.write_text(f"[Definition]\nfailregex = {HARVEST}\nignoreregex = by test$\n")
    code, out, _ = run(capsys, "test-filter", str(maillog), str(conf), str(conf))
    assert code == 0
    assert "Lines: 4 lines, 1 ignored, 2 matched, 1 missed" in out
    code, out, _ = run(capsys, "test-filter", "kerio", str(maillog), "by test$")
    assert "1 ignored" in out


def test_either_argument_order(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    maillog: Path,
    in_tmp: Path,
) -> None:
    """FILTER LOG (ours) and LOG FILTER (fail2ban-regex's) give the same report, for a shipped
    filter, a fail2ban file (both arguments then existing files: the .conf is the filter), a
    relative log and an inline failregex; a log is also `-`."""
    conf = in_tmp / "harvest.conf"
    conf.write_text(f"[Definition]\nfailregex = {HARVEST}\n")
    for spec in ("kerio", str(conf), "harvest.conf", HARVEST):
        _, ours, _ = run(capsys, "test-filter", spec, "maillog")
        _, theirs, _ = run(capsys, "test-filter", "maillog", spec)
        assert "3 matched" in ours and ours == theirs, spec
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(maillog.read_bytes())))
    code, out, _ = run(capsys, "test-filter", "-", HARVEST)
    assert code == 0 and "3 matched" in out


def test_no_log_among_the_arguments_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    missing = str(tmp_path / "maillog")
    code, _, err = run(capsys, "test-filter", missing, HARVEST)
    assert code == 2
    assert f"neither {missing!r} nor {HARVEST!r} is an existing file (or - for stdin)" in err


def test_a_regex_without_a_host_tag_is_named_as_neither(
    capsys: pytest.CaptureFixture[str], maillog: Path
) -> None:
    """A failregex without a host tag is no filter name either: the error says what a
    failregex needs."""
    code, _, err = run(capsys, "test-filter", str(maillog), "rejected: directory harvest")
    assert code == 2 and "nor a failregex (one holds a host tag: <HOST>" in err


def test_an_invalid_inline_failregex_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], maillog: Path
) -> None:
    code, _, err = run(capsys, "test-filter", str(maillog), "<HOST> rejected (")
    assert code == 2 and "failregex #1" in err


def test_print_all_lists_each_outcome_with_line_numbers(
    capsys: pytest.CaptureFixture[str], maillog: Path
) -> None:
    """--print-all-matched, --print-all-ignored, --print-all-missed (and --missed, its old
    name) list the lines, numbered as in the file (the blank line counted)."""
    code, out, _ = run(
        capsys,
        "test-filter",
        str(maillog),
        HARVEST,
        "by test",
        "--print-all-matched",
        "--print-all-ignored",
        "--missed",
    )
    assert code == 0
    lines = out.splitlines()
    at = lines.index("|- Matched line(s):")
    assert lines[at:] == [
        "|- Matched line(s):",
        "|  1: Nov 22 10:00:01 mx kerio[12]: 192.0.2.10 rejected: directory harvest attack",
        "|  3: Nov 22 10:00:03 mx kerio[12]: 192.0.2.11 rejected: directory harvest attack",
        "`-",
        "|- Ignored line(s):",
        "|  5: Nov 22 10:00:04 mx kerio[12]: 198.51.100.7 rejected: directory harvest attack"
        " by test",
        "`-",
        "|- Missed line(s):",
        "|  2: Nov 22 10:00:02 mx kerio[12]: SMTP: User bob@example.org logged in",
        "`-",
    ]


def test_a_few_missed_lines_are_listed_unasked_and_many_are_counted(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """As fail2ban-regex: up to 20 missed lines listed without asking; more are counted, with
    the option that lists them all."""
    log = tmp_path / "noise.log"
    noise = [f"Nov 22 10:00:{n:02} mx kerio[12]: noise {n}\n" for n in range(21)]
    log.write_text("".join(noise[:20]))
    _, out, _ = run(capsys, "test-filter", str(log), HARVEST)
    assert "|  20: Nov 22 10:00:19 mx kerio[12]: noise 19" in out
    log.write_text("".join(noise))
    _, out, _ = run(capsys, "test-filter", str(log), HARVEST)
    assert "|  20:" not in out
    assert "Missed line(s): too many to print. Use --print-all-missed to print all 21 lines" in out
    _, out, _ = run(capsys, "test-filter", str(log), HARVEST, "--print-all-missed")
    assert "|  21: Nov 22 10:00:20 mx kerio[12]: noise 20" in out


def test_the_report_has_a_date_template_summary(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """Which date form dated how many lines, most first, in fail2ban-regex's shape."""
    log = tmp_path / "mixed.log"
    log.write_text(
        "Nov 22 10:00:01 mx kerio[12]: 192.0.2.10 rejected: directory harvest attack\n"
        "2026-11-22 10:00:02 192.0.2.11 rejected: directory harvest attack\n"
        "2026-11-22 10:00:03 192.0.2.12 rejected: directory harvest attack\n"
    )
    code, out, _ = run(capsys, "test-filter", str(log), HARVEST)
    assert code == 0
    lines = out.splitlines()
    at = lines.index("Date template hits:")
    assert lines[at + 1] == "|- [# of hits] date format"
    assert lines[at + 2].startswith("|  [2] %ExY(?P<_sep>[-/.])%m")
    assert lines[at + 3 : at + 5] == ["|  [1] the syslog header", "`-"]


def test_json_lists_what_is_asked_and_ends_with_the_summary(
    capsys: pytest.CaptureFixture[str], maillog: Path
) -> None:
    """--json: the failures (with their line under --print-all-matched), then the ignored and
    missed lines asked for, then one summary object: counts, date forms, hint."""
    code, out, _ = run(
        capsys,
        "test-filter",
        str(maillog),
        HARVEST,
        "by test",
        "--json",
        "--print-all-matched",
        "--print-all-ignored",
        "--print-all-missed",
    )
    assert code == 0
    got = rows(out)
    assert [r["lineno"] for r in got[:-1]] == [1, 3, 5, 2]
    assert got[0]["line"].endswith("192.0.2.10 rejected: directory harvest attack")
    assert got[2] == {
        "lineno": 5,
        "outcome": "ignored",
        "line": "Nov 22 10:00:04 mx kerio[12]: 198.51.100.7 rejected: directory harvest attack"
        " by test",
    }
    assert got[3]["outcome"] == "missed"
    assert got[-1] == {
        "summary": {
            "lines": 4,
            "matched": 2,
            "ignored": 1,
            "missed": 1,
            "other_program": 0,
            "dates": {"the syslog header": 3},
            "hint": None,
        }
    }
    _, out, _ = run(capsys, "test-filter", str(maillog), HARVEST, "--json")
    assert [sorted(r) for r in rows(out)] == [["host", "lineno", "time"]] * 3 + [["summary"]]


def hint_of(capsys: pytest.CaptureFixture[str], *argv: str) -> str | None:
    """The hint of `test-filter ARGV`, checked to be the same in the report and in --json."""
    code, out, _ = run(capsys, "test-filter", *argv)
    assert code == 0
    said = [line.removeprefix("hint: ") for line in out.splitlines() if line.startswith("hint:")]
    code, out, err = run(capsys, "test-filter", *argv, "--json")
    hint: str | None = rows(out)[-1]["summary"]["hint"]
    assert said == ([] if hint is None else [hint])
    assert (f"hint: {hint}" in err) == (hint is not None)
    return hint


def test_hint_a_syslog_prefix_before_a_failregex_anchored_at_the_start(
    capsys: pytest.CaptureFixture[str], maillog: Path
) -> None:
    hint = hint_of(capsys, str(maillog), "^" + HARVEST)
    assert hint is not None
    assert hint.startswith("line 1: the failregex does not allow the syslog prefix 'mx kerio[12]:'")
    assert "drop its ^" in hint


def test_hint_a_missing_host_name_field(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """A log written without the host name: the daemon reads its host as '-', a failregex
    written for the file's lines reads none."""
    log = tmp_path / "maillog"
    log.write_text("Nov 22 10:00:01 kerio[12]: 192.0.2.10 rejected: directory harvest attack\n")
    hint = hint_of(capsys, str(log), r"^kerio\[\d+\]: <HOST> rejected")
    assert hint is not None
    assert hint.startswith("line 1 has no host name after its date")
    assert "'- kerio[12]:'" in hint


def test_hint_kerios_bracketed_date(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """Kerio's own security log: the bracketed date leaves its brackets before the text."""
    log = tmp_path / "security.log"
    log.write_text("[17/Jun/2011 17:00:45] SMTP Spam attack detected from 192.0.2.7, closed\n")
    hint = hint_of(capsys, str(log), "^SMTP Spam attack detected from <HOST>")
    assert hint is not None
    assert hint.startswith(
        "line 1 begins with a date ('17/Jun/2011 17:00:45', bracketed as in Kerio's own logs)"
    )
    assert r"^\[%d/%b/%Y %H:%M:%S\]" in hint


def test_hint_a_date_form_the_datepattern_excludes(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """A filter whose datepattern reads Kerio's bracketed date, given ISO-dated lines."""
    conf = tmp_path / "kerio-own.conf"
    conf.write_text(
        "[Definition]\n"
        "datepattern = ^\\[%%d/%%b/%%Y %%H:%%M:%%S\\]\n"
        "failregex = ^ ?SMTP Spam attack detected from <HOST>\n"
    )
    log = tmp_path / "security.log"
    log.write_text("2011-06-17 17:00:45 SMTP Spam attack detected from 192.0.2.7\n")
    hint = hint_of(capsys, str(conf), str(log))
    assert hint is not None
    assert hint.startswith("line 1 begins with a date ('2011-06-17 17:00:45')")
    assert "the filter's datepattern does not read it" in hint


def test_hint_a_native_filter_given_a_log_that_is_not_syslog(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """A shipped filter reads a syslog message's text: a plain log's date stays in it, or,
    with no host nor program after the date, the text's first word is read as the host."""
    log = tmp_path / "auth.log"
    log.write_text("[22/Nov/2026 10:00:01] Failed password for root from 203.0.113.5 port 22\n")
    hint = hint_of(capsys, "sshd", str(log))
    assert hint is not None
    assert "the filter reads syslog messages: test the syslog copy of this log" in hint
    log.write_text("2026-11-22T10:00:01 Failed password for root from 203.0.113.5 port 22\n")
    hint = hint_of(capsys, "sshd", str(log))
    assert hint is not None
    assert hint.startswith(
        "line 1 has no host name nor program after its date: its first word 'Failed' is read"
    )


def test_no_hint_when_no_other_reading_matches_or_something_matched(
    capsys: pytest.CaptureFixture[str], maillog: Path, tmp_path: Path
) -> None:
    """A hint is only given when a line matches read another way, and only when nothing
    matched."""
    assert hint_of(capsys, str(maillog), "^<HOST> was never here") is None
    assert hint_of(capsys, str(maillog), HARVEST) is None
    log = tmp_path / "both.log"
    log.write_text(MAILLOG + "192.0.2.99 rejected: directory harvest attack\n")
    assert hint_of(capsys, str(log), "^" + HARVEST) is None


def test_the_hint_reads_the_first_20_missed_lines_whatever_is_listed(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """The hint is looked for in the first 20 missed lines, so it costs the same on a log of
    millions, with --print-all-missed or without."""
    log = tmp_path / "maillog"
    noise = [f"Nov 22 10:00:{n:02} mx kerio[12]: noise {n}\n" for n in range(20)]
    log.write_text("".join(noise) + MAILLOG)
    for listed in ((), ("--print-all-missed",)):
        code, out, _ = run(capsys, "test-filter", str(log), "^" + HARVEST, *listed, "--json")
        assert code == 0 and rows(out)[-1]["summary"]["hint"] is None
    log.write_text("".join(noise[1:]) + MAILLOG)
    assert hint_of(capsys, str(log), "^" + HARVEST) is not None
