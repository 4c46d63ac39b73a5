"""fail2ban for comparison: Debian's fail2ban package unpacked into .cache/fail2ban-deb
(tests/debian_fail2ban.py; never installed, never started as a service), run with
``/usr/bin/python3`` and ``PYTHONPATH``, and the fail2ban filter that does the work of each of
our shipped filters.

``fail2ban_regex`` runs ``fail2ban-regex`` on a log and returns lines/s by its own clock (the
"processed in" figure: reading, date detection and matching, without interpreter start-up), as
``appliancectl test-filter`` reports ours. ``--print-no-missed --print-no-ignored`` keeps it
from printing lines; ``-r`` keeps it from resolving names.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Our shipped filter -> the fail2ban filter (filter.d name[options]) for the same service;
# None where fail2ban ships none.
COUNTERPART: dict[str, str | None] = {
    "dovecot": "dovecot",
    "exim-auth": "exim",
    "exim-reject": "exim",
    "kerio": "kerio",
    "postfix-rbl": "postfix[mode=rbl]",
    "postfix-relay": "postfix[mode=normal]",
    "postfix-sasl": "postfix[mode=auth]",
    "qmail-smtp": "qmail",
    "qmailadmin": None,
    "roundcube": "roundcube-auth",
    "sshd": "sshd",
    "vpopmail": None,
}

_LINES = re.compile(r"^Lines: (\d+) lines", re.MULTILINE)
_SECONDS = re.compile(r"\[processed in ([\d.]+) sec\]")


def tree() -> Path:
    """The unpacked package (fetched once); SystemExit saying why when it cannot be had."""
    sys.path.insert(0, str(ROOT))
    from tests.debian_fail2ban import CACHE, FetchError, debian_filter_d

    try:
        debian_filter_d()
    except FetchError as e:
        raise SystemExit(f"bench: fail2ban is needed for the comparison: {e}") from e
    return CACHE


def fail2ban_regex(spec: str, log: Path) -> float:
    """Lines/s of ``fail2ban-regex LOG SPEC`` with Debian's filter.d."""
    base = tree()
    done = subprocess.run(
        [
            "/usr/bin/python3",
            str(base / "usr" / "bin" / "fail2ban-regex"),
            "-c", str(base / "etc" / "fail2ban"),
            "-r", "--print-no-missed", "--print-no-ignored",
            str(log), spec,
        ],
        env={"PYTHONPATH": str(base / "usr" / "lib" / "python3" / "dist-packages"),
             "LANG": "C.UTF-8", "PATH": "/usr/bin:/bin"},
        capture_output=True, text=True, check=False, timeout=3600,
    )  # fmt: skip
    lines, seconds = _LINES.search(done.stdout), _SECONDS.search(done.stdout)
    if done.returncode != 0 or lines is None or seconds is None:
        raise SystemExit(f"fail2ban-regex {spec} failed:\n{done.stdout[-2000:]}{done.stderr}")
    return int(lines.group(1)) / float(seconds.group(1))
