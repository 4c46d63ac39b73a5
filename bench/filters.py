"""Filter benchmarks of the issue "Users bring their fail2ban filters": lines per second of
``appliancectl test-filter`` on a generated 1,000,000-line mail log (bench/gen_maillog.py, cached
in .cache/bench/), for each shipped filter, for all the shipped config's jails together (each
line parsed once, then every jail that reads its program matches it, as the daemon does), and
for Debian's fail2ban postfix.conf (fetched as tests/rules/test_f2bfilter.py does).

Run by ``bench/__main__.py`` (``./dev bench --only filters``); prints one JSON object.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from applianced.conf.load import load_config
from applianced.errors import ApplianceError
from applianced.receiver.parse import parse
from applianced.rules.filters import Filter, shipped_filter_names
from applianced.rules.jail import ProgramSelector

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / ".cache" / "bench"
SHIPPED_CONFIG = ROOT / "applianced" / "conf" / "defaults" / "appliance.toml"
_RATE = re.compile(r"\(([\d,]+) lines/s\)")


def mail_log(lines: int) -> Path:
    """The generated log of ``lines`` lines, made once with bench/gen_maillog.py."""
    path = CACHE / f"mail-{lines}.log"
    if not path.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [
                sys.executable,
                str(ROOT / "bench" / "gen_maillog.py"),
                "-n",
                str(lines),
                "-o",
                str(path),
            ],
            check=True,
            capture_output=True,
        )
    return path


def test_filter(spec: str, log: Path) -> float:
    """Lines/s that ``appliancectl test-filter SPEC LOG`` reports (its own clock)."""
    cli = "import sys; from applianced.cli import main; sys.exit(main())"
    done = subprocess.run(
        [sys.executable, "-c", cli, "test-filter", spec, str(log)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    found = _RATE.search(done.stderr)
    if done.returncode != 0 or found is None:
        raise SystemExit(f"test-filter {spec} failed:\n{done.stderr}")
    return float(found.group(1).replace(",", ""))


def all_jails(log: Path) -> float:
    """Lines/s through every jail of the shipped config at once (parse once, route, match)."""
    config = load_config(SHIPPED_CONFIG)
    jails = [
        (
            ProgramSelector(j.programs),
            Filter(j.failregex, j.ignoreregex, name=j.name, prefregex=j.prefregex),
            j.match_on == "line",
        )
        for j in config.jails
    ]
    now = datetime.now(UTC)
    count = 0
    started = time.monotonic()
    with log.open("rb") as f:
        for raw in f:
            count += 1
            try:
                message = parse(raw.rstrip(b"\n"), now)
            except ApplianceError:
                continue
            for selects, filt, on_line in jails:
                if selects(message.app_name or ""):
                    filt.match(" " + message.line if on_line else message.msg)
    return count / (time.monotonic() - started)


def main(argv: list[str]) -> None:
    lines = int(argv[0]) if argv else 1_000_000
    log = mail_log(lines)
    sys.path.insert(0, str(ROOT))
    from tests.debian_fail2ban import FetchError, debian_filter_d

    figures: dict[str, float | None] = {}
    for name in shipped_filter_names():
        figures[name] = test_filter(name, log)
    figures["all shipped jails"] = all_jails(log)
    try:
        figures["fail2ban postfix.conf"] = test_filter(str(debian_filter_d() / "postfix.conf"), log)
    except FetchError as e:
        print(f"bench: fail2ban postfix.conf skipped: {e}", file=sys.stderr)
        figures["fail2ban postfix.conf"] = None
    print(json.dumps({"lines": lines, "lines_per_s": figures}))


if __name__ == "__main__":
    main(sys.argv[1:])
