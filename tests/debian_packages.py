"""Debian packages fetched for the tests without installing them: ``apt-get download`` into
``.cache/deb``, unpacked with ``dpkg -x`` into a cache directory (gitignored). Shared by
tests/debian_fail2ban.py, tests/debian_bouncer.py and tests/debian_syslog_ng.py, which say
what each package is for and why it is not installed with apt.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

__all__ = ["ROOT", "FetchError", "fetch"]


class FetchError(Exception):
    """A package could not be fetched (not root, no apt-get, offline); says why."""


def fetch(packages: Sequence[str], cache: Path, ready: Callable[[], bool]) -> None:
    """Unless ``ready()``, download ``packages`` and unpack each into ``cache``; under a lock,
    as the suite's workers may ask at once."""
    cache.parent.mkdir(parents=True, exist_ok=True)
    with (cache.parent / f"{cache.name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if ready():
            return
        if os.geteuid() != 0 or shutil.which("apt-get") is None or shutil.which("dpkg") is None:
            raise FetchError(f"needs root with apt-get and dpkg to fetch Debian's {packages[0]}")
        download = cache.parent / "deb"
        download.mkdir(parents=True, exist_ok=True)
        for attempt in ([], ["apt-get", "update", "-qq"]):
            if attempt:
                subprocess.run(attempt, capture_output=True, timeout=300)
            got = subprocess.run(
                ["apt-get", "download", "-q", *packages],
                cwd=download,
                capture_output=True,
                timeout=300,
            )
            debs = [sorted(download.glob(f"{package}_*.deb")) for package in packages]
            if got.returncode == 0 and all(debs):
                break
        else:
            why = got.stderr.decode()[-300:]
            raise FetchError(f"apt-get download {' '.join(packages)} failed (offline?): {why}")
        for versions in debs:
            subprocess.run(["dpkg", "-x", str(versions[-1]), str(cache)], check=True, timeout=120)
