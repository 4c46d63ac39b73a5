"""With --json, every error appliancectl reports is one JSON object on stderr, with a code and
a message (and, for a config file, where): usage errors from argparse and from the verbs,
config errors, a daemon that is not there, a request the daemon refused, an edit refused."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from applianced.cli import main
from applianced.conf.load import DEFAULT_CONFIG


def error(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, Any]]:
    """Run appliancectl with --json: its exit code and its error object; nothing on stdout."""
    code = main([*argv, "--json"])
    out, err = capsys.readouterr()
    assert out == ""
    return code, json.loads(err)["error"]


@pytest.fixture
def conf(tmp_path: Path) -> Path:
    path = tmp_path / "appliance.toml"
    path.write_text(DEFAULT_CONFIG.read_text())
    return path


def test_argparse_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    code, e = error(capsys, "ban")
    assert code == 2 and e["code"] == "usage"
    assert e["message"] == "appliancectl ban: the following arguments are required: jail, address"
    code, e = error(capsys, "nosuchverb")
    assert code == 2 and e["code"] == "usage" and "invalid choice" in e["message"]


def test_a_verbs_usage_error(capsys: pytest.CaptureFixture[str], conf: Path) -> None:
    code, e = error(capsys, "--config", str(conf), "whitelist", "add", "192.0.2.1")
    assert code == 2 and e["code"] == "usage" and "--global" in e["message"]


def test_config_errors_name_each_place(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(
        '[defaults]\nmaxretry = "3"\nhook = "out"\n[[listeners]]\ntransport = "udp"\n'
        '[jails.sshd]\nfilter = "sshd"\n'
    )
    code, e = error(capsys, "check", "--config", str(bad))
    assert code == 2 and e["code"] == "config_invalid"
    assert (e["file"], e["line"], e["key"]) == (str(bad), 2, "defaults.maxretry")
    assert [(m["line"], m["key"]) for m in e["errors"]] == [
        (2, "defaults.maxretry"),
        (3, "defaults.hook"),
    ]
    assert e["message"].startswith(f"2 errors in {bad}:\n{bad}:2: [defaults.maxretry]")


def test_daemon_unreachable(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, e = error(capsys, "--socket", str(tmp_path / "none.sock"), "status")
    assert code == 3 and e["code"] == "daemon_unreachable"
    assert e["message"].startswith("applianced is not running")


def test_a_request_the_daemon_refused(
    capsys: pytest.CaptureFixture[str], refusing_socket: Path
) -> None:
    code, e = error(capsys, "--socket", str(refusing_socket), "banned", "--jail", "nojail")
    assert code == 1 and e == {"code": "refused", "message": "no jail 'nojail'"}


def test_edit_refusals(capsys: pytest.CaptureFixture[str], conf: Path) -> None:
    code, e = error(capsys, "--config", str(conf), "jail", "set", "nojail", "maxretry", "2")
    assert code == 1 and e["code"] == "edit_refused" and "no jail 'nojail'" in e["message"]
    code, e = error(capsys, "--config", str(conf), "jail", "set", "sshd", "maxretry", "x")
    assert code == 2 and e["code"] == "config_invalid" and e["key"] == "jails.sshd.maxretry"
    assert e["line"] == conf.read_text().splitlines().index("maxretry = 3") + 1
    assert e["message"].startswith("refused, nothing written: ")


def test_json_before_the_verb_as_config_and_socket_are(
    capsys: pytest.CaptureFixture[str], conf: Path
) -> None:
    """`appliancectl --json VERB` as `appliancectl --config F VERB`: it was refused as an
    unrecognized argument (the help lists the options before VERB)."""
    code = main(["--json", "--config", str(conf), "check"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert json.loads(out)["config"] == str(conf)
    code = main(["--json", "check", "--config", str(conf)])
    assert code == 0 and json.loads(capsys.readouterr().out)["config"] == str(conf)
