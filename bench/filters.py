"""Filter benchmarks of the issue "Users bring their fail2ban filters": lines per second of
``appliancectl test-filter`` on a generated 1,000,000-line mail log (bench/maillog.py, cached
in .cache/bench/), for each shipped filter, for all the shipped config's jails together (the
daemon's routing gate on each line's bytes, then every jail that reads the program of a line it
lets through matches it, as the daemon does), and
for Debian's fail2ban postfix.conf read by our loader, and its sshd.conf (multi-line,
``<F-MLFID>``); and beside each, ``fail2ban-regex`` with
fail2ban's filter for the same service (bench/fail2ban.py) on the first ``f2b_lines`` lines of
the same log (fail2ban is too slow for the whole log in a short run; lines/s do not depend on
the length once start-up is excluded, and both tools report their own clock).

Run by ``bench/__main__.py`` (``./dev bench --only filters``) as ``python -m bench.filters
LINES F2B_LINES``; prints one JSON object: ``ours`` and ``fail2ban`` map a figure's name to
lines/s (None where fail2ban has no counterpart).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from applianced.conf.filterfiles.native import shipped_filter_names
from applianced.conf.load import load_config
from applianced.errors import ApplianceError
from applianced.receiver.parse import Dropped, parse_routed
from applianced.rules.engine import Engine
from applianced.rules.jail import Jail, jail_filter
from bench.fail2ban import COUNTERPART, fail2ban_regex
from bench.maillog import make

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / ".cache" / "bench"
SHIPPED_CONFIG = ROOT / "applianced" / "conf" / "defaults" / "appliance.toml"
_RATE = re.compile(r"\(([\d,]+) lines/s\)")


def mail_log(lines: int) -> Path:
    """The generated log of ``lines`` lines (bench/maillog.py), made once and cached."""
    path = CACHE / f"mail-mixed-{lines}.log"
    if not path.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".partial")
        make(partial, lines)
        partial.rename(path)
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
    """Lines/s through every jail of the shipped config at once, as the daemon runs them: the
    engine's routing gate on the bytes (``parse_routed`` with ``Engine.gate``), then for a
    message it lets through, the filter of each jail that reads its program (``Engine.route``),
    on the text ``Engine.feed`` gives it. Counts no failure: the filters' cost alone."""
    config = load_config(SHIPPED_CONFIG)
    engine = Engine([Jail(conf, jail_filter(conf)) for conf in config.jails])
    gate = engine.gate
    now = datetime.now(UTC)
    count = 0
    started = time.monotonic()
    with log.open("rb") as f:
        for raw in f:
            count += 1
            try:
                message = parse_routed(raw, gate, now)
            except ApplianceError:
                continue
            if isinstance(message, Dropped):
                continue
            line = None  # as in Engine.feed: built once, for the first fail2ban filter
            for jail in engine.route(message.app_name):
                filt = jail.filter
                if filt.on_line:
                    line = line or " " + message.line
                    filt.match(line)
                else:
                    filt.match(message.msg)
    return count / (time.monotonic() - started)


def head(log: Path, lines: int) -> Path:
    """The first ``lines`` lines of ``log``, cached beside it."""
    path = log.with_name(f"{log.stem}.head-{lines}.log")
    if not path.exists():
        with log.open("rb") as src, path.open("wb") as dst:
            for _, raw in zip(range(lines), src, strict=False):
                dst.write(raw)
    return path


def main(argv: list[str]) -> None:
    lines = int(argv[0]) if argv else 1_000_000
    f2b_lines = int(argv[1]) if len(argv) > 1 else 100_000
    log = mail_log(lines)
    f2b_log = head(log, min(f2b_lines, lines))
    sys.path.insert(0, str(ROOT))
    from tests.debian_fail2ban import debian_filter_d

    ours: dict[str, float] = {}
    theirs: dict[str, float | None] = {}
    by_spec: dict[str, float] = {}

    def fail2ban(spec: str | None) -> float | None:
        if spec is not None and spec not in by_spec:
            by_spec[spec] = fail2ban_regex(spec, f2b_log)
        return None if spec is None else by_spec[spec]

    for name in shipped_filter_names():
        ours[name] = test_filter(name, log)
        theirs[name] = fail2ban(COUNTERPART.get(name))
    ours["all shipped jails"] = all_jails(log)
    ours["Debian postfix.conf, our loader"] = test_filter(
        str(debian_filter_d() / "postfix.conf"), log
    )
    theirs["Debian postfix.conf, our loader"] = fail2ban("postfix")
    # A multi-line filter (<F-MLFID>): its lines go through rules/multiline.py's state.
    ours["Debian sshd.conf, multi-line"] = test_filter(str(debian_filter_d() / "sshd.conf"), log)
    theirs["Debian sshd.conf, multi-line"] = fail2ban("sshd")
    theirs["all shipped jails"] = max(by_spec.values())  # vs the fastest single fail2ban filter
    out = {"lines": lines, "f2b_lines": f2b_lines, "ours": ours, "fail2ban": theirs}
    print(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1:])
