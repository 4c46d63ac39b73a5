"""appliancectl's offline verbs: check, parse, test-filter, and --help that teaches."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from applianced.cli import main

DATA = Path(__file__).parent / "data"


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
    rows = [json.loads(line) for line in out.splitlines()]
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
    ],
)
def test_every_verb_has_help_with_an_example(capsys: pytest.CaptureFixture[str], verb: str) -> None:
    """--help of each verb explains it and shows an example."""
    with pytest.raises(SystemExit) as info:
        main([verb, "--help"])
    out = capsys.readouterr().out
    assert info.value.code == 0 and "example:" in out and "appliancectl" in out
