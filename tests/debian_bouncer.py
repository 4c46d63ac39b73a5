"""Fetch Debian's ``crowdsec-firewall-bouncer`` (``tests/debian_packages.py``) into
``.cache/crowdsec-bouncer-deb`` (gitignored), for tests/e2e/test_bouncer.py.

Not installed with apt: the package's postinst enables and starts its systemd service, which
would pull from 127.0.0.1:8080 and write its nftables table into the host's own ruleset. The
test runs the unpacked binary with its own config file inside a network namespace.
"""

from __future__ import annotations

from pathlib import Path

from tests.debian_packages import ROOT, FetchError, fetch

CACHE = ROOT / ".cache" / "crowdsec-bouncer-deb"
PACKAGE = "crowdsec-firewall-bouncer"

__all__ = ["FetchError", "bouncer_binary"]


def bouncer_binary() -> Path:
    """The bouncer's executable from Debian's package, downloaded once and cached."""
    binary = CACHE / "usr" / "bin" / PACKAGE
    fetch([PACKAGE], CACHE, binary.exists)
    return binary
