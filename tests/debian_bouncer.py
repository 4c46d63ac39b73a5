"""Fetch Debian's ``crowdsec-firewall-bouncer`` (``apt-get download``, unpacked with
``dpkg -x``) into ``.cache/crowdsec-bouncer-deb`` (gitignored), for tests/e2e/test_bouncer.py.

Not installed with apt: the package's postinst enables and starts its systemd service, which
would pull from 127.0.0.1:8080 and write its nftables table into the host's own ruleset. The
test runs the unpacked binary with its own config file inside a network namespace.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".cache" / "crowdsec-bouncer-deb"
PACKAGE = "crowdsec-firewall-bouncer"

__all__ = ["FetchError", "bouncer_binary"]


class FetchError(Exception):
    """The package could not be fetched (not root, no apt-get, offline); says why."""


def bouncer_binary() -> Path:
    """The bouncer's executable from Debian's package, downloaded once and cached."""
    binary = CACHE / "usr" / "bin" / PACKAGE
    if binary.exists():
        return binary
    if os.geteuid() != 0 or shutil.which("apt-get") is None or shutil.which("dpkg") is None:
        raise FetchError(f"needs root with apt-get and dpkg to fetch Debian's {PACKAGE}")
    download = CACHE.parent / "deb"
    download.mkdir(parents=True, exist_ok=True)
    for attempt in ([], ["apt-get", "update", "-qq"]):
        if attempt:
            subprocess.run(attempt, capture_output=True, timeout=300)
        got = subprocess.run(
            ["apt-get", "download", "-q", PACKAGE], cwd=download, capture_output=True, timeout=300
        )
        debs = sorted(download.glob(f"{PACKAGE}_*.deb"))
        if got.returncode == 0 and debs:
            break
    else:
        why = got.stderr.decode()[-300:]
        raise FetchError(f"apt-get download {PACKAGE} failed (offline?): {why}")
    subprocess.run(["dpkg", "-x", str(debs[-1]), str(CACHE)], check=True, timeout=120)
    return binary
