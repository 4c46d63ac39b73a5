"""Tests for applianced.conf.filterfiles.native: reading native TOML filter files and the shipped
ones. What the shipped filters match is tests/rules/test_filters.py's.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from applianced.conf.filterfiles.native import (
    FilterDef,
    load_filter_def,
    shipped_filter,
    shipped_filter_names,
)
from applianced.errors import FilterError


def test_shipped_filter_names_are_sorted() -> None:
    """shipped_filter_names lists the shipped files, sorted."""
    names = shipped_filter_names()
    assert names == sorted(names)
    assert "sshd" in names


def test_unknown_shipped_filter_lists_the_shipped_ones() -> None:
    """Asking for an unknown shipped filter names the filters that exist."""
    with pytest.raises(FilterError) as caught:
        shipped_filter("postfix-sals")
    assert "'postfix-sals'" in str(caught.value)
    assert "postfix-sasl" in str(caught.value) and "sshd" in str(caught.value)


# --- filter files -------------------------------------------------------------------------------

GOOD_FILE = """\
description = "demo"
programs = ["demo", "demo/*"]
failregex = ['''^fail from <HOST>$''']
"""


def _write(tmp_path: Path, text: str, name: str = "demo") -> Path:
    path = tmp_path / f"{name}.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_filter_file_loads_with_optional_ignoreregex(tmp_path: Path) -> None:
    """A minimal filter file loads; the name is the file's stem; ignoreregex defaults to ()."""
    path = _write(tmp_path, GOOD_FILE)
    assert load_filter_def(path) == FilterDef(
        name="demo",
        description="demo",
        programs=("demo", "demo/*"),
        failregex=("^fail from <HOST>$",),
        ignoreregex=(),
        path=path,
    )


def test_unknown_key_names_file_line_and_key(tmp_path: Path) -> None:
    """An unknown key (a typo) names the file, its line and the allowed keys."""
    path = _write(tmp_path, GOOD_FILE + "failregx = ['x']\n")
    with pytest.raises(FilterError) as caught:
        load_filter_def(path)
    message = str(caught.value)
    assert message.startswith(f"{path}:4:")
    assert "unknown key 'failregx'" in message and "ignoreregex" in message


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ('description = "x"\nprograms = "demo"\nfailregex = ["<HOST>"]\n', r":2: 'programs' must"),
        ('description = "x"\nprograms = ["demo"]\n', r"missing key 'failregex'"),
        ('description = 1\nprograms = ["d"]\nfailregex = ["<HOST>"]\n', r":1: 'description' must"),
        ('description = "x"\nprograms = ["d"]\nfailregex = []\n', r":3: 'failregex' must hold"),
        ('description = "x"\nprograms = ["a b"]\nfailregex = ["<HOST>"]\n', r"not a program name"),
    ],
)
def test_wrong_values_are_refused(tmp_path: Path, text: str, why: str) -> None:
    """Wrong types, missing keys and empty lists are FilterErrors naming the file (and line)."""
    path = _write(tmp_path, text)
    with pytest.raises(FilterError, match=re.escape(str(path)) + ".*" + why):
        load_filter_def(path)


def test_bad_toml_names_file_and_line(tmp_path: Path) -> None:
    """Invalid TOML is reported with the file and the line tomllib gives."""
    path = _write(tmp_path, 'description = "x"\nprograms = [\n"a"\nfailregex = 3\n')
    with pytest.raises(FilterError, match=re.escape(f"{path}:4: not valid TOML")):
        load_filter_def(path)


def test_compile_error_names_the_file(tmp_path: Path) -> None:
    """A bad regex in a filter file is reported with the file, the filter and the regex."""
    path = _write(tmp_path, GOOD_FILE.replace("<HOST>", "(<HOST>"))
    with pytest.raises(FilterError, match=re.escape(f"{path}: filter 'demo', failregex #1")):
        load_filter_def(path).compile()


def test_missing_file_is_a_filter_error(tmp_path: Path) -> None:
    """An unreadable filter file is a FilterError naming it."""
    with pytest.raises(FilterError, match="cannot read filter file"):
        load_filter_def(tmp_path / "nope.toml")
