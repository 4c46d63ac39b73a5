"""Fetch Debian's syslog-ng (``apt-get download syslog-ng-core``, ``tests/debian_packages.py``) into
``.cache/syslog-ng-deb`` (gitignored), for tests/e2e/test_forwarders.py, with the libraries it
needs that are not installed (``libivykis0``, ``libnet1``, ``libwrap0``, ``libpcre3`` on a
machine with rsyslog).

Not installed with apt: ``syslog-ng-core`` conflicts with the ``rsyslog`` package the TLS tests
run, and its postinst would start the system's syslog service. The test runs the unpacked
binary in the foreground on its own config, with ``LD_LIBRARY_PATH`` and ``--module-path``
pointing into the cache (``SyslogNg.env``, ``SyslogNg.argv``).
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from tests.debian_packages import ROOT, FetchError, fetch

CACHE = ROOT / ".cache" / "syslog-ng-deb"
PACKAGE = "syslog-ng-core"
# The shared libraries syslog-ng-core links that a Debian machine with rsyslog may lack, by
# the package that ships each; only those ldconfig does not know are fetched.
LIBRARIES = {
    "libivykis.so.0": "libivykis0",
    "libnet.so.1": "libnet1",
    "libwrap.so.0": "libwrap0",
    "libpcre.so.3": "libpcre3",
}

__all__ = ["FetchError", "SyslogNg", "syslog_ng"]


@dataclass(frozen=True)
class SyslogNg:
    """The unpacked syslog-ng: how to run it from the cache."""

    binary: Path
    modules: Path
    library_path: str

    def argv(self, config: Path, workdir: Path) -> list[str]:
        """syslog-ng in the foreground on ``config``, its state files in ``workdir``."""
        return [
            str(self.binary),
            "-F",
            "-e",
            "-f",
            str(config),
            f"--module-path={self.modules}",
            f"--persist-file={workdir / 'syslog-ng.persist'}",
            f"--pidfile={workdir / 'syslog-ng.pid'}",
            f"--control={workdir / 'syslog-ng.ctl'}",
        ]

    def env(self) -> dict[str, str]:
        return {**os.environ, "LD_LIBRARY_PATH": self.library_path}


def syslog_ng() -> SyslogNg:
    """syslog-ng from Debian's package, downloaded and unpacked once; a FetchError when it
    cannot be, or lacks a library."""
    known = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True).stdout
    packages = [PACKAGE, *(pkg for lib, pkg in LIBRARIES.items() if lib not in known)]
    fetch(packages, CACHE, lambda: _unpacked() is not None)
    found = _unpacked()
    if found is None:
        raise FetchError(f"{PACKAGE} unpacked into {CACHE} but its syslog-ng is missing")
    missing = _missing_libraries(found)
    if missing:
        raise FetchError(f"syslog-ng cannot load {', '.join(missing)} (ldd)")
    return found


def _unpacked() -> SyslogNg | None:
    binary = CACHE / "usr" / "sbin" / "syslog-ng"
    modules = sorted((CACHE / "usr" / "lib" / "syslog-ng").glob("3.*"))
    if not binary.exists() or not modules:
        return None
    dirs = [CACHE / "usr/lib/syslog-ng", CACHE / "usr/lib/x86_64-linux-gnu"]
    dirs.append(CACHE / "lib/x86_64-linux-gnu")
    return SyslogNg(binary, modules[-1], ":".join(str(d) for d in dirs))


def _missing_libraries(found: SyslogNg) -> list[str]:
    """The libraries ldd cannot find for syslog-ng and its socket module."""
    missing: list[str] = []
    for binary in (found.binary, found.modules / "libafsocket.so"):
        done = subprocess.run(
            ["ldd", str(binary)], capture_output=True, text=True, env=found.env(), timeout=30
        )
        missing += [line.split()[0] for line in done.stdout.splitlines() if "not found" in line]
    return sorted(set(missing))
