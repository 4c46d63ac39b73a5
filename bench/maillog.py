"""The benchmarks' mail log: bench/gen_maillog.py's postfix, dovecot and exim lines (~10%
failures), with 2% of its lines (chosen at random, seeded) replaced by failure lines of the
other services our filters read (postfix RBL, exim rejects, kerio, qmail, vpopmail, qmailadmin,
roundcube, sshd). Those lines are the failure lines of tests/data/mail-lines.tsv with the
attacker address swapped for one of gen_maillog's attacker pool (RFC 5737, 198.18.0.0/16,
2001:db8:a000::/36) and the time for the replaced line's. The line count does not change.
"""

from __future__ import annotations

import random
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "tests" / "data" / "mail-lines.tsv"
SERVICES = (
    "postfix-rbl", "exim-reject", "kerio", "qmail-smtp", "vpopmail", "qmailadmin", "roundcube",
    "sshd",
)  # fmt: skip
SHARE = 0.02
_STAMP = len("Nov 22 10:00:01")


def templates() -> list[str]:
    """Failure lines of SERVICES, the address replaced by ``{addr}`` (IPv4 samples only)."""
    out = []
    for row in SAMPLES.read_text().splitlines():
        if row.startswith("#") or not row.strip():
            continue
        service, expected, line = row.split("\t", 2)
        if service in SERVICES and expected != "-" and ":" not in expected:
            exact = re.compile(rf"(?<![\d.]){re.escape(expected)}(?![\d])")
            out.append(exact.sub("{addr}", line[_STAMP:].replace("{", "{{").replace("}", "}}")))
    return out


def make(path: Path, lines: int) -> None:
    """Write the log of ``lines`` lines to ``path``."""
    sys.path.insert(0, str(ROOT / "bench"))
    from gen_maillog import attacker_pool  # type: ignore[import-not-found]

    rng = random.Random(8)
    pool = attacker_pool(20_000)
    extra = templates()
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "base.log"
        subprocess.run(
            [sys.executable, str(ROOT / "bench" / "gen_maillog.py"), "-n", str(lines),
             "-o", str(base)],
            check=True, capture_output=True,
        )  # fmt: skip
        with base.open() as src, path.open("w") as dst:
            for line in src:
                if rng.random() < SHARE:
                    line = line[:_STAMP] + rng.choice(extra).format(addr=rng.choice(pool)) + "\n"
                dst.write(line)
