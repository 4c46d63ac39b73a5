"""fail2ban filter.d compatibility: our own fail2ban-format fixtures (tests/data/f2b/) for every
supported feature and every refusal, then Debian's real filter.d files against the corpus."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from applianced.conf.filterfiles.fail2ban import (
    is_fail2ban_filter,
    load_fail2ban_filter,
    parse_filter_spec,
    resolve_fail2ban_filter,
)
from applianced.errors import FilterError
from applianced.receiver.parse import parse
from applianced.rules.filters import Filter, Outcome
from tests.debian_fail2ban import FetchError
from tests.debian_fail2ban import debian_filter_d as fetch_debian_filter_d

DATA = Path(__file__).parent.parent.parent / "data"
F2B = DATA / "f2b"
ROOT = Path(__file__).parent.parent.parent.parent


def line_of(text: str) -> str:
    """What a fail2ban filter examines for a syslog file line: ' host app[pid]: msg'."""
    return " " + parse(text.encode(), datetime.now(UTC)).line


def demo(mode: str = "normal") -> Filter:
    return load_fail2ban_filter(F2B / "demo.conf", {"mode": mode}).compile()


# --- our fixtures: every supported feature --------------------------------------------------


def test_includes_local_and_interpolation_resolve_into_one_filter() -> None:
    """before/after includes (relative to the file), .local after .conf, %(x)s and <x> tags."""
    f = load_fail2ban_filter(F2B / "demo.conf")
    assert [p.name for p in f.files] == [
        "common.conf",
        "demo.conf",
        "demo-extra.conf",
        "demo.local",
    ]
    assert f.failregex[0] == r"^auth failed for <F-USER>[^\s,]+</F-USER> from <HOST>(?: port \d+)?$"
    assert f.prefregex is not None and "<F-CONTENT>" in f.prefregex
    assert r"demo(?:-auth)?(?:\[\d+\])?:" in f.prefregex  # <lt_<logtype>/...> and <_daemon>
    assert f.ignoreregex == (r"^auth failed for <F-USER>[^\s,]+</F-USER> from 192\.0\.2\.99",)
    assert sorted(f.programs) == [
        "demo",
        "demo-auth",
    ]  # derived from _daemon, which the prefix uses


def test_datepattern_is_read_and_applied() -> None:
    """datepattern (%% unescaped) is the filter's own: the date it finds is cut before the
    failregexes run."""
    f = load_fail2ban_filter(F2B / "demo.conf")
    assert f.datepattern == r"^\[%d/%b/%Y %H:%M:%S\]"
    assert f.own_dates == f.datepattern
    assert not any("datepattern" in n for n in f.notes)
    filt = f.compile()
    assert filt.dates is not None


def test_a_bad_datepattern_names_its_file_and_line(tmp_path: Path) -> None:
    conf = tmp_path / "bad.conf"
    conf.write_text("[Definition]\nfailregex = from <HOST>\ndatepattern = ^%%Q\n")
    with pytest.raises(FilterError, match=r"bad\.conf:3: datepattern '\^%Q': %Q is not"):
        load_fail2ban_filter(conf)


@pytest.mark.parametrize(
    ("line", "outcome", "host"),
    [
        (
            "Nov 22 10:00:01 mx demo[12]: auth failed for bob from 203.0.113.5 port 22",
            "m",
            "203.0.113.5",
        ),
        (
            "Nov 22 10:00:01 mx demo-auth: Info: auth failed for bob from 2001:db8::5",
            "m",
            "2001:db8::5",
        ),
        (
            "Nov 22 10:00:01 mx demo[12]: session opened for bob from 203.0.113.6",
            "i",
            "203.0.113.6",
        ),
        ("Nov 22 10:00:01 mx demo[12]: token ab12 refused for 203.0.113.7", "m", "203.0.113.7"),
        ("Nov 22 10:00:01 mx demo[12]: auth failed for bob from 192.0.2.99", "i", "192.0.2.99"),
        ("Nov 22 10:00:01 mx demo[12]: locked out 203.0.113.8", "m", "203.0.113.8"),
        ("Nov 22 10:00:01 mx other[12]: auth failed for bob from 203.0.113.9", "x", None),
        ("Nov 22 10:00:01 mx demo[12]: probe from 203.0.113.10", "x", None),
    ],
)
def test_prefregex_tags_nofail_and_ignoreregex(line: str, outcome: str, host: str | None) -> None:
    """The prefix must match, then the content is examined; <F-NOFAIL> hits are no failure."""
    f = demo()
    got, match, _ = f.examine(line_of(line))
    assert got is {"m": Outcome.MATCHED, "i": Outcome.IGNORED, "x": Outcome.MISSED}[outcome]
    assert (match.host if match else None) == host
    assert (f.match(line_of(line)) is not None) is (outcome == "m")


def test_captures_user_and_id() -> None:
    """<F-USER> fills Match.user, <F-ID> a field; both come through the prefregex."""
    m = demo().match(line_of("Nov 22 10:00:01 mx demo[1]: auth failed for eve from 203.0.113.5"))
    assert m is not None and m.user == "eve"
    m = demo().match(line_of("Nov 22 10:00:01 mx demo[1]: token zz9 refused for 203.0.113.7"))
    assert m is not None and m.fields["id"] == "zz9"


def test_mode_selects_extra_failregexes() -> None:
    """mode=aggressive adds mdre-aggressive's lines; <ADDR>, <IP6> tags and inline comments."""
    line = line_of("Nov 22 10:00:01 mx demo[1]: probe from 203.0.113.10")
    assert demo().match(line) is None
    m = demo("aggressive").match(line)
    assert m is not None and str(m.address) == "203.0.113.10"
    assert demo("aggressive").match(line_of("Nov 22 10:00:01 mx demo: six only 192.0.2.1")) is None
    six = demo("aggressive").match(line_of("Nov 22 10:00:01 mx demo: six only 2001:db8::1"))
    assert six is not None


def test_mid_pattern_global_flag_is_moved_to_the_start() -> None:
    """((?i)X) written mid-pattern (refused by Python 3.11) applies to the whole regex."""
    f = load_fail2ban_filter(F2B / "demo.conf")
    assert f.failregex[-1] == "(?i)^(LOCKED) out <HOST>$"
    assert demo().match(line_of("Nov 22 10:00:01 mx demo: Locked OUT 203.0.113.8")) is not None


def test_subnet_and_cidr_tags_capture_the_prefix() -> None:
    """<SUBNET> takes an optional /prefix, <CIDR> a required one; Match.prefix carries it."""
    f = load_fail2ban_filter(F2B / "subnet.conf").compile()
    m = f.match("block 203.0.113.0/24 by policy")
    assert m is not None and m.prefix == 24 and str(m.address) == "203.0.113.0"
    m = f.match("block 203.0.113.9 by policy")
    assert m is not None and m.prefix is None
    assert f.match("range 203.0.113.9 abused") is None
    m = f.match("range 2001:db8::/48 abused")
    assert m is not None and m.prefix == 48
    assert f.match("range 203.0.113.0/33 abused") is None
    assert load_fail2ban_filter(F2B / "subnet.conf").programs == ()  # no _daemon: every program


def test_filter_spec_with_options_and_paths() -> None:
    """name[k=v, k2="a, b"] parses; a path or .conf name is a fail2ban filter."""
    assert parse_filter_spec('postfix[mode=aggressive, x="a, b"]') == (
        "postfix",
        {"mode": "aggressive", "x": "a, b"},
    )
    assert is_fail2ban_filter("/etc/fail2ban/filter.d/postfix.conf")
    assert is_fail2ban_filter("filters/x.conf[mode=ddos]")
    assert not is_fail2ban_filter("postfix-sasl")
    f = resolve_fail2ban_filter("demo[mode=aggressive]", F2B, Path("/"))
    assert len(f.failregex) == 6
    f = resolve_fail2ban_filter("data/f2b/demo.conf", None, DATA.parent)
    assert f.name == "demo"


# --- refusals: file, line and feature ----------------------------------------------------------


def write(tmp_path: Path, text: str, name: str = "f.conf") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        ("[Definition]\nfailregex = ^a <HOST>\nmaxlines = 500\n", 3, "1 to 100"),
        ("[Definition]\nfailregex = ^a <HOST>\nmaxlines = two\n", 3, "give a number"),
        ("[INCLUDES]\nbefore = nothere.conf\n[Definition]\nfailregex = <HOST>\n", 2, "no such"),
        ("[Definition]\nfailregex = ^a (<HOST>\n", 2, "bad regular expression"),
        ("[Definition]\nfailregex = ^a <HOST>\n  ^b %(nope)s <HOST>\n", 3, "not defined"),
        ("[Definition]\nprefregex = ^x\nfailregex = ^a <HOST>\n", 2, "<F-CONTENT>"),
    ],
)
def test_unsupported_or_broken_is_an_error_with_file_and_line(
    tmp_path: Path, text: str, line: int, words: str
) -> None:
    """What we cannot honour is refused at load time, naming file, line and feature."""
    path = write(tmp_path, text)
    with pytest.raises(FilterError) as e:
        load_fail2ban_filter(path).compile()
    assert f"{path}:{line}:" in str(e.value) and words in str(e.value)


def test_substitution_loops_and_missing_sections_are_errors(tmp_path: Path) -> None:
    """A self-referencing variable, a file without [Definition], a missing file."""
    with pytest.raises(FilterError, match=r"loop|itself"):
        load_fail2ban_filter(write(tmp_path, "[Definition]\na = <b>\nb = <a>\nfailregex = <a>\n"))
    with pytest.raises(FilterError, match="no \\[Definition\\]"):
        load_fail2ban_filter(write(tmp_path, "[Other]\nx = 1\n", "g.conf"))
    with pytest.raises(FilterError, match="no such fail2ban filter"):
        load_fail2ban_filter(tmp_path / "absent.conf")
    with pytest.raises(FilterError, match="include loop"):
        load_fail2ban_filter(write(tmp_path, "[INCLUDES]\nbefore = h.conf\n", "h.conf"))


def test_hostless_failregex_is_left_out_with_a_note(tmp_path: Path) -> None:
    """A failregex without a host tag needs fail2ban's multi-line tracking: noted, left out."""
    f = load_fail2ban_filter(write(tmp_path, "[Definition]\nfailregex = ^a <HOST>\n  ^too many\n"))
    assert f.failregex == ("^a <HOST>",)
    assert any(":3:" in n and "host tag" in n for n in f.notes)


# --- the real thing: Debian's fail2ban filter.d against the corpus -----------------------------


@pytest.fixture(scope="session")
def debian_filter_d() -> Path:
    """Debian's fail2ban filter.d, from `apt-get download fail2ban` unpacked with dpkg -x
    (cached in .cache/, gitignored). Skipped only when not root or offline."""
    try:
        return fetch_debian_filter_d()
    except FetchError as e:
        pytest.skip(str(e))


def corpus(service: str) -> list[tuple[str, str]]:
    rows = []
    for row in (DATA / "mail-lines.tsv").read_text().splitlines():
        if row.startswith("#") or not row.strip():
            continue
        svc, want, line = row.split("\t", 2)
        if svc == service:
            rows.append((want, line))
    return rows


# Which corpus rows each Debian filter catches, by design of that filter (see the findings in
# the test below): service -> (filter spec, rows matched: expected address per row index).
REAL = {
    "postfix-sasl": ("postfix[mode=aggressive]", {0: "203.0.113.7", 1: "198.51.100.23",
                                                  2: "2001:db8::7", 4: "192.0.2.47"}),
    "postfix-rbl": ("postfix", {0: "192.0.2.44"}),
    "postfix-relay": ("postfix", {0: "192.0.2.45", 1: "192.0.2.48"}),
    "dovecot": ("dovecot", {0: "203.0.113.8", 1: "203.0.113.9", 2: "2001:db8::9",
                            4: "203.0.113.10"}),
    "sshd": ("sshd", {0: "203.0.113.31", 1: "2001:db8::31", 2: "203.0.113.32",
                      3: "203.0.113.33"}),
    "exim-auth": ("exim", {}),
    "exim-reject": ("exim", {}),
    "roundcube": ("roundcube-auth", {}),
    "kerio": ("kerio", {}),
    "qmail-smtp": ("qmail", {}),
}  # fmt: skip


@pytest.mark.parametrize("service", sorted(REAL))
def test_debian_filters_on_the_corpus(debian_filter_d: Path, service: str) -> None:
    """Debian's filters load and compile, and match exactly the corpus rows listed in REAL;
    no row ever yields an address other than the one the corpus expects for it."""
    spec, expected = REAL[service]
    f2b = resolve_fail2ban_filter(spec, debian_filter_d, Path("/"))
    filt = f2b.compile()
    got = {}
    for index, (want, line) in enumerate(corpus(service)):
        m = filt.match(line_of(line))
        if m is not None:
            got[index] = m.host
            # never an address from attacker-controlled text: the client's own, or the row's
            assert want in ("-", m.host), f"{spec} took {m.host} from {line!r}, want {want}"
    assert got == expected


@pytest.mark.parametrize(
    "name", ["postfix", "dovecot", "exim", "exim-spam", "sshd", "roundcube-auth", "kerio", "qmail"]
)
def test_debian_mail_filters_load_in_every_mode(debian_filter_d: Path, name: str) -> None:
    """Each mail-related Debian filter compiles, in each of its modes."""
    path = debian_filter_d / f"{name}.conf"
    modes = {"normal"} | {
        line.split("=")[0].strip()[len("mdre-") :].removesuffix("-other")
        for line in path.read_text().splitlines()
        if line.startswith("mdre-") and "=" in line
    }
    for mode in sorted(modes):
        assert load_fail2ban_filter(path, {"mode": mode}).compile().failregex


def test_debian_filter_d_loads(debian_filter_d: Path) -> None:
    """Every Debian filter compiles; only the helper files (*common.conf, included by the
    others) are refused, naming the file."""
    refused = []
    for path in sorted(debian_filter_d.glob("*.conf")):
        try:
            load_fail2ban_filter(path).compile()
        except FilterError as e:
            refused.append((path.name, str(e)))
    assert [name for name, _ in refused if not name.endswith("common.conf")] == [], refused
    assert all(name in why for name, why in refused)


def test_test_filter_cli_accepts_a_conf_path(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """appliancectl test-filter PATH.conf[mode=...] LOG --json: one row per failure line."""
    import json

    from applianced.cli import main

    log = tmp_path / "demo.log"
    log.write_text(
        "Nov 22 10:00:01 mx demo[1]: auth failed for bob from 203.0.113.5\n"
        "Nov 22 10:00:02 mx demo[1]: probe from 203.0.113.6\n"
        "2026-11-22T10:00:03+00:00 mx demo[1]: session opened for bob from 203.0.113.7\n"
        "Nov 22 10:00:04 mx other[1]: auth failed for bob from 203.0.113.8\n"
    )
    spec = f"{F2B / 'demo.conf'}[mode=aggressive]"
    code = main(["--config", str(tmp_path / "none.toml"), "test-filter", spec, str(log), "--json"])
    out, err = capsys.readouterr()
    assert code == 0
    assert [json.loads(x) for x in out.splitlines()][:-1] == [
        {"lineno": 1, "host": "203.0.113.5", "user": "bob"},
        {"lineno": 2, "host": "203.0.113.6"},
    ]
    assert "matched 2, ignored 1" in err and "other program 1" in err
    code = main(["test-filter", str(F2B / "demo.conf"), str(log), "--missed"])
    out, _ = capsys.readouterr()
    assert "failregex #1: [1 hit]" in out and "Lines: 4 lines" in out
    assert "|  2: Nov 22 10:00:02 mx demo[1]: probe" in out


def test_an_ipv4_mapped_cidr_capture_is_the_ipv4_network() -> None:
    """``::ffff:203.0.113.0/120`` is 203.0.113.0/24: the address becomes IPv4, and so must the
    prefix (a mapped network wider than ::ffff:0:0/96 is no IPv4 network: no match)."""
    f = load_fail2ban_filter(F2B / "subnet.conf").compile()
    m = f.match("range ::ffff:203.0.113.0/120 abused")
    assert m is not None and (str(m.address), m.prefix) == ("203.0.113.0", 24)
    m = f.match("block ::ffff:203.0.113.9/128 by policy")
    assert m is not None and (str(m.address), m.prefix) == ("203.0.113.9", 32)
    assert f.match("range ::ffff:203.0.113.0/64 abused") is None


def test_known_and_plain_names_inside_another_section(tmp_path: Path) -> None:
    """asterisk.conf's form: ``[lt_journal] __prefix_line = %(known/__prefix_line)s<more>``
    reads the included file's [lt_journal] value, and a name [lt_journal] does not set comes
    from [Definition]."""
    write(tmp_path, "[lt_journal]\n__prefix_line = host\\s+\n", "base.conf")
    path = write(
        tmp_path,
        "[INCLUDES]\nbefore = base.conf\n"
        "[Definition]\nextra = app:\\s+\n"
        "prefregex = ^<lt_<logtype>/__prefix_line><F-CONTENT>.+</F-CONTENT>$\n"
        "failregex = ^failed from <HOST>$\n"
        "[lt_journal]\n__prefix_line = %(known/__prefix_line)s%(extra)s\n",
    )
    f = load_fail2ban_filter(path, {"logtype": "journal"})
    assert f.prefregex == r"^host\s+app:\s+<F-CONTENT>.+</F-CONTENT>$"


def test_datepattern_none_keeps_the_date_in_the_text(tmp_path: Path) -> None:
    """{NONE}: fail2ban finds no date, so a filter may match on the date itself."""
    conf = tmp_path / "nodate.conf"
    conf.write_text("[Definition]\nfailregex = ^Jun \\d+ .* from <HOST>$\ndatepattern = {NONE}\n")
    filt = load_fail2ban_filter(conf).compile()
    assert filt.dates is not None
    found = filt.match("Jun 21 16:47:46 login from 192.0.2.7")
    assert found is not None and str(found.address) == "192.0.2.7"
