"""Fetch Debian's fail2ban filter.d (``apt-get download fail2ban``, unpacked with ``dpkg -x``) into
``.cache/fail2ban-deb`` (gitignored): its filter.d and fail2ban's own annotated sample logs. Shared
by tests/conf/filterfiles/test_fail2ban.py, the conformance suite
(tests/conf/filterfiles/conformance.py) and bench/filters.py.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".cache" / "fail2ban-deb"

__all__ = ["CACHE", "FetchError", "debian_filter_d", "debian_sample_logs"]


class FetchError(Exception):
    """Debian's fail2ban could not be fetched (not root, no apt-get, offline); says why."""


def debian_filter_d() -> Path:
    """The filter.d directory of Debian's fail2ban package, downloaded once and cached."""
    filter_d = CACHE / "etc" / "fail2ban" / "filter.d"
    if (filter_d / "common.conf").exists():
        return filter_d
    if os.geteuid() != 0 or shutil.which("apt-get") is None or shutil.which("dpkg") is None:
        raise FetchError("needs root with apt-get and dpkg to fetch Debian's fail2ban")
    download = CACHE.parent / "deb"
    download.mkdir(parents=True, exist_ok=True)
    for attempt in ([], ["apt-get", "update", "-qq"]):
        if attempt:
            subprocess.run(attempt, capture_output=True, timeout=300)
        got = subprocess.run(
            ["apt-get", "download", "-q", "fail2ban"],
            cwd=download,
            capture_output=True,
            timeout=300,
        )
        debs = sorted(download.glob("fail2ban_*.deb"))
        if got.returncode == 0 and debs:
            break
    else:
        why = got.stderr.decode()[-300:]
        raise FetchError(f"apt-get download fail2ban failed (offline?): {why}")
    subprocess.run(["dpkg", "-x", str(debs[-1]), str(CACHE)], check=True, timeout=120)
    return filter_d


def debian_sample_logs() -> Path:
    """fail2ban's annotated sample logs (one per filter, ``# failJSON:`` before each line), from
    the same cached package."""
    debian_filter_d()
    return (
        CACHE
        / "usr"
        / "lib"
        / "python3"
        / "dist-packages"
        / "fail2ban"
        / "tests"
        / "files"
        / "logs"
    )
