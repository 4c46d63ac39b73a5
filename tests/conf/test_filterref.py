"""conf/filterref.py: one resolution of a filter reference, for a jail's ``filter`` and for
``appliancectl test-filter``."""

from __future__ import annotations

from pathlib import Path

import pytest

from applianced.conf.filterfiles.fail2ban import F2bFilter
from applianced.conf.filterfiles.native import FilterDef
from applianced.conf.filterref import UnknownFilterError, resolve_filter
from applianced.errors import FilterError

F2B = """[Definition]
failregex = ^Invalid user \\S+ from <HOST>$
"""


def test_a_name_without_filter_dir_is_a_shipped_filter(tmp_path: Path) -> None:
    source = resolve_filter("sshd", None, tmp_path)
    assert isinstance(source, FilterDef) and source.name == "sshd"


def test_a_path_is_a_fail2ban_file_from_base(tmp_path: Path) -> None:
    (tmp_path / "mine.conf").write_text(F2B)
    source = resolve_filter("mine.conf", None, tmp_path)
    assert isinstance(source, F2bFilter) and source.path == (tmp_path / "mine.conf").resolve()


def test_filter_dir_wins_for_a_name_it_holds(tmp_path: Path) -> None:
    """With filter_dir, its sshd.conf is the sshd filter; a name it lacks is still shipped."""
    (tmp_path / "sshd.conf").write_text(F2B)
    assert isinstance(resolve_filter("sshd", tmp_path, tmp_path), F2bFilter)
    assert isinstance(resolve_filter("dovecot", tmp_path, tmp_path), FilterDef)


def test_filter_dir_takes_every_unshipped_name(tmp_path: Path) -> None:
    """A name no shipped filter has is looked for there, and its absence is a FilterError."""
    with pytest.raises(FilterError, match=r"nope\.conf") as caught:
        resolve_filter("nope", tmp_path, tmp_path)
    assert not isinstance(caught.value, UnknownFilterError)


def test_an_unknown_name_lists_the_shipped_filters(tmp_path: Path) -> None:
    with pytest.raises(UnknownFilterError, match=r"the shipped filters are: .*sshd"):
        resolve_filter("nope", None, tmp_path)
