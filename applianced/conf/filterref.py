"""What a filter reference names: a jail's ``filter`` key and ``appliancectl test-filter``'s
FILTER argument are resolved here, one way for both, to a fail2ban filter file or a shipped
filter. Called by ``conf/jailconf.py`` and ``cli/testfilter.py``; reads filter files, compiles
nothing.
"""

from __future__ import annotations

from pathlib import Path

from applianced.conf.filterfiles.fail2ban import (
    F2bFilter,
    is_fail2ban_filter,
    resolve_fail2ban_filter,
)
from applianced.conf.filterfiles.native import FilterDef, shipped_filter, shipped_filter_names
from applianced.errors import FilterError

__all__ = ["UnknownFilterError", "resolve_filter"]


class UnknownFilterError(FilterError):
    """The reference is neither a fail2ban filter file nor a shipped filter's name."""


def resolve_filter(spec: str, filter_dir: Path | None, base: Path) -> F2bFilter | FilterDef:
    """The filter ``spec`` names.

    A path (``/etc/fail2ban/filter.d/postfix.conf``, relative ones from ``base``) is a fail2ban
    file, ``[option=value, ...]`` allowed. With ``filter_dir``, a name is that directory's
    ``NAME.conf`` when the file exists, when the name carries options or when no shipped filter
    has it. Otherwise it is a shipped filter. Raises UnknownFilterError for a name that is none
    of these, FilterError for a file that cannot be read."""
    if is_fail2ban_filter(spec) or (
        filter_dir is not None
        and (
            "[" in spec
            or (filter_dir / f"{spec}.conf").exists()
            or spec not in shipped_filter_names()
        )
    ):
        return resolve_fail2ban_filter(spec, filter_dir, base)
    if spec not in shipped_filter_names():
        raise UnknownFilterError(
            f"no shipped filter is called {spec!r}; the shipped filters are: "
            f"{', '.join(shipped_filter_names())}"
        )
    return shipped_filter(spec)
