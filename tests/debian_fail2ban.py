"""Fetch Debian's fail2ban (``tests/debian_packages.py``) into ``.cache/fail2ban-deb``
(gitignored): its filter.d and fail2ban's own annotated sample logs. Shared by
tests/conf/filterfiles/test_fail2ban.py, the conformance suite
(tests/conf/filterfiles/conformance.py) and bench/filters.py.
"""

from __future__ import annotations

from pathlib import Path

from tests.debian_packages import ROOT, FetchError, fetch

CACHE = ROOT / ".cache" / "fail2ban-deb"

__all__ = ["CACHE", "FetchError", "debian_filter_d", "debian_sample_logs"]


def debian_filter_d() -> Path:
    """The filter.d directory of Debian's fail2ban package, downloaded once and cached."""
    filter_d = CACHE / "etc" / "fail2ban" / "filter.d"
    fetch(["fail2ban"], CACHE, (filter_d / "common.conf").exists)
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
