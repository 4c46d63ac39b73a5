"""``appliancectl import-fail2ban``: stdout or --output (never over a file without --force),
the --json summary, the error for a tree it cannot read; what it writes passes ``check``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from applianced.cli import main

QMAIL = Path(__file__).parents[1] / "data" / "f2b-trees" / "qmail"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_output_file_passes_check_and_is_never_overwritten_without_force(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    out = tmp_path / "appliance.toml"
    code, stdout, err = run(capsys, "import-fail2ban", str(QMAIL), "--output", str(out))
    assert code == 0 and stdout == ""
    assert f"imported 7 jails from {QMAIL}" in err and f"wrote {out}" in err
    code, stdout, _ = run(capsys, "check", "--config", str(out), "--json")
    assert code == 0 and json.loads(stdout)["jails"]["vpopmail"] is True
    out.write_text("# mine\n")
    code, _, err = run(capsys, "import-fail2ban", str(QMAIL), "--output", str(out))
    assert code == 2 and "exists; pass --force" in err
    assert out.read_text() == "# mine\n"
    code, _, _ = run(capsys, "import-fail2ban", str(QMAIL), "--output", str(out), "--force")
    assert code == 0 and "[jails.vpopmail]" in out.read_text()


def test_stdout_is_the_config_and_the_report_goes_to_stderr(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, stdout, err = run(capsys, "import-fail2ban", str(QMAIL))
    assert code == 0
    assert stdout.startswith("# applianced config from the fail2ban tree")
    assert "[jails.qmail-smtp]" in stdout and "imported 7 jails" not in stdout
    assert "imported 7 jails" in err


def test_json_summary(capsys: pytest.CaptureFixture[str]) -> None:
    """Jails with each value and its origin, what was not carried, the config text."""
    code, stdout, _ = run(capsys, "import-fail2ban", str(QMAIL), "--json")
    assert code == 0
    summary = json.loads(stdout)
    smtp = summary["jails"]["qmail-smtp"]
    assert smtp["values"]["ports"] == [25, 465, 587]
    assert smtp["origins"]["bantime"] == "bantime, jail.local:14"
    assert smtp["not_carried"] == []
    assert summary["notify"]["values"]["to"] == ["postmaster@example.org"]
    assert summary["skipped"] == {} and summary["output"] is None
    assert summary["config"].startswith("# applianced config")


def test_a_tree_it_cannot_read(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = run(capsys, "import-fail2ban", str(tmp_path / "none"), "--json")
    assert code == 2
    error = json.loads(err)["error"]
    assert error["code"] == "fail2ban_tree_unreadable"
    assert "no jail.conf or jail.local" in error["message"]
