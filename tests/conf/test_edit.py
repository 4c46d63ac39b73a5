"""conf/edit.py: live edits keep every other byte of a commented file, are validated by the
real loader before anything is written, and are written atomically with the file's mode."""

from __future__ import annotations

import difflib
import json
import os
import stat
from pathlib import Path

import pytest

from applianced.cli import main
from applianced.conf import edit
from applianced.conf.load import DEFAULT_CONFIG, load_config
from applianced.errors import ConfigError

SHIPPED = DEFAULT_CONFIG.read_text()


@pytest.fixture
def conf(tmp_path: Path) -> Path:
    """A copy of the shipped, heavily commented appliance.toml."""
    path = tmp_path / "appliance.toml"
    path.write_text(SHIPPED)
    return path


def diff(before: str, after: str) -> tuple[list[str], list[str]]:
    """The lines removed from ``before`` and added in ``after`` (difflib opcodes)."""
    a, b = before.splitlines(keepends=True), after.splitlines(keepends=True)
    removed: list[str] = []
    added: list[str] = []
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
        if tag != "equal":
            removed += a[i1:i2]
            added += b[j1:j2]
    return removed, added


def line_after(text: str, anchor: str, table: str) -> str:
    """The line following ``anchor`` inside ``[table]``."""
    lines = text.splitlines()
    start = lines.index(f"[{table}]")
    i = lines.index(anchor, start)
    return lines[i + 1]


# Every jail option: (VALUE typed on the command line, the line expected in the file, the
# jail's line it replaces or None when the key is new). Jail: sshd (filter, ports [22],
# maxretry 3); exim-reject for the keys it sets.
SET_CASES: dict[str, tuple[str, str, str, str | None]] = {
    "bantime": ("sshd", "1h", 'bantime = "1h"', None),
    "findtime": ("exim-reject", "600", "findtime = 600", 'findtime = "1h"'),
    "maxretry": ("sshd", "2", "maxretry = 2", "maxretry = 3"),
    "ports": ("sshd", "22,2222,1000-2000", 'ports = [22, 2222, "1000-2000"]', "ports = [22]"),
    "protocol": ("sshd", "both", 'protocol = "both"', None),
    "ignoreip": (
        "sshd",
        "192.0.2.0/24, 2001:db8::/48",
        'ignoreip = ["192.0.2.0/24", "2001:db8::/48"]',
        None,
    ),
    "max_count": ("sshd", "5", "max_count = 5", None),
    "bantime_increment.enabled": ("sshd", "false", "bantime_increment.enabled = false", None),
    "bantime_increment.factor": ("sshd", "3", "bantime_increment.factor = 3.0", None),
    "bantime_increment.maxtime": ("sshd", "2w", 'bantime_increment.maxtime = "2w"', None),
    "findtime_history": ("sshd", "30d", 'findtime_history = "30d"', None),
    "max_tracked": ("sshd", "5000", "max_tracked = 5000", None),
    "ipv6_prefix": ("sshd", "56", "ipv6_prefix = 56", None),
    "use_dns": ("sshd", "true", "use_dns = true", None),
    "usedns": ("sshd", "warn", 'usedns = "warn"', None),
    "log_found": ("sshd", "true", "log_found = true", None),
    "filter_dir": ("sshd", "/nonexistent/filter.d", 'filter_dir = "/nonexistent/filter.d"', None),
    "hook": ("sshd", "forward", 'hook = "forward"', None),
    "verdict": ("sshd", "reject", 'verdict = "reject"', None),
    "bantime_jitter": ("sshd", "30s", 'bantime_jitter = "30s"', None),
    "notify": ("sshd", "", "notify = []", None),
    "enabled": ("exim-reject", "yes", "enabled = true", "enabled = false"),
    "filter": ("sshd", "postfix-rbl", 'filter = "postfix-rbl"', 'filter = "sshd"'),
    "failregex": (
        "sshd",
        "^Bad login from <HOST>$",
        'failregex = ["^Bad login from <HOST>$"]',
        None,
    ),
    "ignoreregex": ("sshd", "^test", 'ignoreregex = ["^test"]', None),
    "programs": ("sshd", "sshd, sshd-session", 'programs = ["sshd", "sshd-session"]', None),
    "senders": ("sshd", "127.0.0.1", 'senders = ["127.0.0.1"]', None),
}


def test_the_cases_cover_every_option_the_loader_accepts() -> None:
    """`jail set` knows every jail key of the loader, and these tests exercise each one."""
    assert set(SET_CASES) == set(edit.JAIL_OPTIONS)


@pytest.mark.parametrize("option", sorted(SET_CASES))
def test_jail_set_changes_exactly_one_line(conf: Path, option: str) -> None:
    """`jail set` replaces the value's line, or adds one line after the jail's last key;
    every other byte (comments, alignment, blank lines) is kept and the loader accepts it."""
    jail, value, want, replaced = SET_CASES[option]
    result = edit.jail_set(conf, jail, option, value)
    after = conf.read_text()
    removed, added = diff(SHIPPED, after)
    assert added == [want + "\n"]
    assert removed == ([] if replaced is None else [replaced + "\n"])
    if replaced is None and jail == "sshd":
        assert line_after(after, "maxretry = 3", "jails.sshd") == want
    assert result.changed and result.config is not None
    assert load_config(conf) == result.config


def test_setting_the_same_value_writes_nothing(conf: Path) -> None:
    """An edit that changes nothing leaves the file untouched (same inode) and says so."""
    before = conf.stat()
    result = edit.jail_set(conf, "sshd", "maxretry", "3")
    assert not result.changed
    assert conf.stat().st_ino == before.st_ino and conf.read_text() == SHIPPED


def test_a_crlf_file_keeps_crlf_and_a_bom_is_refused_with_what_to_do(conf: Path) -> None:
    """A file saved by a Windows editor: CRLF line ends stay CRLF on the lines an edit adds
    (the new line ended in LF alone), and a byte order mark is named (tomllib said "Empty key
    at line 1 col 0") by the edit and by the loader alike."""
    tight = '[[listeners]]\ntransport = "udp"\n[jails.sshd]\nfilter = "sshd"\nports = [22]\n'
    conf.write_bytes(tight.replace("\n", "\r\n").encode())
    edit.jail_set(conf, "sshd", "maxretry", "5")
    lines = conf.read_bytes().split(b"\n")
    assert lines[-1] == b"" and all(line.endswith(b"\r") for line in lines[:-1])
    assert b"maxretry = 5\r" in lines
    conf.write_bytes(b"\xef\xbb\xbf" + SHIPPED.encode())
    for attempt in (
        lambda: edit.jail_set(conf, "sshd", "maxretry", "4"),
        lambda: load_config(conf),
    ):
        with pytest.raises(ConfigError, match="starts with a byte order mark") as e:
            attempt()
        assert "save it as UTF-8 without one" in str(e.value)


def test_an_existing_sub_key_is_set_in_place(conf: Path) -> None:
    """A second `bantime_increment.factor` edits the dotted key it added, not a new one."""
    edit.jail_set(conf, "sshd", "bantime_increment.factor", "3")
    edit.jail_set(conf, "sshd", "bantime_increment.factor", "4.5")
    assert diff(SHIPPED, conf.read_text()) == ([], ["bantime_increment.factor = 4.5\n"])
    sshd = load_config(conf).jail("sshd")
    assert sshd is not None and sshd.bantime_increment.factor == 4.5


def test_a_table_sub_key_keeps_its_comment(tmp_path: Path) -> None:
    """In a [jails.X.bantime_increment] table the value changes, its comment stays aligned."""
    path = tmp_path / "a.toml"
    text = SHIPPED.replace(
        "maxretry = 3\n",
        "maxretry = 3\n\n[jails.sshd.bantime_increment]\nfactor = 2.0   # doubling\n",
    )
    path.write_text(text)
    edit.jail_set(path, "sshd", "bantime_increment.factor", "10")
    assert diff(text, path.read_text()) == (
        ["factor = 2.0   # doubling\n"],
        ["factor = 10.0  # doubling\n"],
    )


def test_a_longer_value_keeps_the_comment_column(conf: Path) -> None:
    """`whitelist add --global` fills `ignoreip = []  # e.g. ...`; the comment does not move."""
    edit.whitelist(conf, None, "192.0.2.0/24", add=True)
    removed, added = diff(SHIPPED, conf.read_text())
    assert [line.index("#") for line in added] == [line.index("#") for line in removed]
    assert added[0].startswith('ignoreip = ["192.0.2.0/24"] ')
    assert added[0].endswith('# e.g. ["192.0.2.0/24", "2001:db8::/48"]\n')


@pytest.mark.parametrize(
    ("option", "value", "key"),
    [
        ("maxretry", "abc", "jails.sshd.maxretry"),
        ("maxretry", "0", "jails.sshd.maxretry"),
        ("bantime", "10x", "jails.sshd.bantime"),
        ("ports", "70000", "jails.sshd.ports"),
        ("ports", "all,22", "jails.sshd.ports"),
        ("protocol", "sctp", "jails.sshd.protocol"),
        ("ignoreip", "not-an-address", "jails.sshd.ignoreip"),
        ("bantime_increment.factor", "0.5", "jails.sshd.bantime_increment.factor"),
        ("use_dns", "maybe", "jails.sshd.use_dns"),
        ("notify", "mail", "notify.to"),  # needs [notify] to = [...]
        ("filter", "no-such-filter", "jails.sshd.filter"),
        ("failregex", "^no host tag$", "jails.sshd.failregex"),
    ],
)
def test_an_invalid_value_is_refused_with_the_loaders_message_and_nothing_written(
    conf: Path, option: str, value: str, key: str
) -> None:
    """The loader judges the whole new text; its file/line/key error comes back, the file
    stays byte for byte and no temp file is left behind."""
    before = conf.stat()
    with pytest.raises(ConfigError) as caught:
        edit.jail_set(conf, "sshd", option, value)
    assert caught.value.path == conf and caught.value.key == key
    assert caught.value.line is not None
    assert conf.read_text() == SHIPPED and conf.stat().st_ino == before.st_ino
    assert sorted(p.name for p in conf.parent.iterdir()) == ["appliance.toml"]


def test_unknown_jail_and_option_are_refused(conf: Path) -> None:
    """A typo in the jail or option names what exists; nothing is written."""
    with pytest.raises(edit.EditError, match=r"no jail 'shd'.*sshd"):
        edit.jail_set(conf, "shd", "maxretry", "2")
    with pytest.raises(edit.EditError, match=r"unknown jail option 'maxretries'.*maxretry"):
        edit.jail_set(conf, "sshd", "maxretries", "2")
    with pytest.raises(edit.EditError, match=r"bantime_increment\.factor"):
        edit.jail_set(conf, "sshd", "bantime_increment", "2")
    assert conf.read_text() == SHIPPED


def test_disable_inserts_enabled_false_first_and_enable_flips_it(conf: Path) -> None:
    """`jail disable sshd` adds `enabled = false` under its header; enable turns it true."""
    edit.jail_enable(conf, "sshd", enabled=False)
    text = conf.read_text()
    assert diff(SHIPPED, text) == ([], ["enabled = false\n"])
    assert line_after(text, "[jails.sshd]", "jails.sshd") == "enabled = false"
    jail = load_config(conf).jail("sshd")
    assert jail is not None and not jail.enabled
    edit.jail_enable(conf, "sshd", enabled=True)
    assert diff(SHIPPED, conf.read_text()) == ([], ["enabled = true\n"])


def test_enable_a_disabled_example_changes_one_line(conf: Path) -> None:
    """`jail enable kerio`: its `enabled = false` becomes true, nothing else moves."""
    result = edit.jail_enable(conf, "kerio", enabled=True)
    assert diff(SHIPPED, conf.read_text()) == (["enabled = false\n"], ["enabled = true\n"])
    assert result.config is not None and "kerio" in [j.name for j in result.config.enabled_jails]


def test_enable_an_enabled_jail_writes_nothing(conf: Path) -> None:
    """A jail without `enabled` is enabled: nothing to write."""
    assert not edit.jail_enable(conf, "dovecot", enabled=True).changed
    assert conf.read_text() == SHIPPED


def test_enable_a_shipped_filter_missing_from_the_file_adds_its_jail(tmp_path: Path) -> None:
    """A shipped filter name with no table gets `[jails.NAME] filter = "NAME"` at the end."""
    path = tmp_path / "a.toml"
    text = SHIPPED.split("[jails.kerio]")[0]
    path.write_text(text)
    result = edit.jail_enable(path, "kerio", enabled=True)
    assert result.created == "kerio"
    after = path.read_text()
    assert after.startswith(text) and after[len(text) :].split() == [
        "[jails.kerio]",
        "filter",
        "=",
        '"kerio"',
    ]
    with pytest.raises(edit.EditError, match="no jail 'nosuch'"):
        edit.jail_enable(path, "nosuch", enabled=True)


def test_general_disable_then_enable_is_an_exact_round_trip(conf: Path) -> None:
    """`general disable` marks the 3 enabled jails `enabled = false` with a comment saying so;
    `general enable` enables exactly those again (not the 9 examples disabled before) and
    gives back the file as it was."""
    edit.general_enable(conf, enabled=False)
    removed, added = diff(SHIPPED, conf.read_text())
    assert removed == [] and added == ["enabled = false  # appliancectl general disable\n"] * 3
    assert load_config(conf).enabled_jails == ()
    edit.general_enable(conf, enabled=True)
    assert conf.read_text() == SHIPPED
    assert len(load_config(conf).enabled_jails) == 3


LISTENER = '[[listeners]]\ntransport = "udp"\naddress = "127.0.0.1"\nport = 5514\n\n'


def test_general_round_trip_keeps_an_enabled_lines_comment(conf: Path) -> None:
    """A jail with `enabled = true  # why` comes back as it was; a jail enabled by hand
    meanwhile loses the mark, and `general enable` with nothing marked is refused."""
    text = (
        LISTENER
        + '[jails.a]\nfilter = "sshd"\nenabled = true  # ours\n\n[jails.b]\nfilter = "sshd"\n'
    )
    conf.write_text(text)
    edit.general_enable(conf, enabled=False)
    assert "enabled = false # appliancectl general disable (was true); ours" in conf.read_text()
    edit.general_enable(conf, enabled=True)
    assert conf.read_text() == text
    edit.general_enable(conf, enabled=False)
    edit.jail_enable(conf, "b", enabled=True)
    assert conf.read_text().endswith('[jails.b]\nfilter = "sshd"\n')
    edit.general_enable(conf, enabled=True)
    assert [j.name for j in load_config(conf).enabled_jails] == ["a", "b"]
    with pytest.raises(edit.EditError, match=r"no jail .* was disabled by `appliancectl general"):
        edit.general_enable(conf, enabled=True)


def test_whitelist_add_and_remove_in_a_jail(conf: Path) -> None:
    """`whitelist add sshd` creates the jail's ignoreip; a second address is appended; remove
    takes one out by network (any spelling) and a missing one is refused."""
    edit.whitelist(conf, "sshd", "203.0.113.0/24", add=True)
    edit.whitelist(conf, "sshd", "2001:db8::1", add=True)
    assert diff(SHIPPED, conf.read_text()) == (
        [],
        ['ignoreip = ["203.0.113.0/24", "2001:db8::1"]\n'],
    )
    assert not edit.whitelist(conf, "sshd", "203.0.113.9/24", add=True).changed  # same network
    edit.whitelist(conf, "sshd", "203.0.113.0/24", add=False)
    assert diff(SHIPPED, conf.read_text()) == ([], ['ignoreip = ["2001:db8::1"]\n'])
    with pytest.raises(edit.EditError, match=r"not in jails\.sshd\.ignoreip"):
        edit.whitelist(conf, "sshd", "198.51.100.1", add=False)
    with pytest.raises(edit.EditError, match="not an address"):
        edit.whitelist(conf, "sshd", "mx.example.org", add=True)
    sshd = load_config(conf).jail("sshd")
    assert sshd is not None and [str(n) for n in sshd.ignoreip] == ["2001:db8::1/128"]


def test_whitelist_global_remove_restores_the_original_bytes(conf: Path) -> None:
    """Adding then removing a global address gives back the file byte for byte."""
    edit.whitelist(conf, None, "192.0.2.7", add=True)
    edit.whitelist(conf, None, "192.0.2.7", add=False)
    assert conf.read_text() == SHIPPED


def test_whitelist_keeps_a_multiline_commented_list(tmp_path: Path) -> None:
    """A hand-written multi-line ignoreip with comments keeps them; the address is added."""
    path = tmp_path / "a.toml"
    text = SHIPPED.replace(
        "ignoreip = []                                     # e.g. ",
        'ignoreip = [\n  "192.0.2.0/24",   # office\n  "198.51.100.1",  # monitoring\n]  # e.g. ',
    )
    path.write_text(text)
    edit.whitelist(path, None, "203.0.113.5", add=True)
    after = path.read_text()
    assert "# office" in after and "# monitoring" in after
    assert diff(text, after) == ([], ['  "203.0.113.5",\n'])
    nets = [str(n) for n in load_config(path).jail("sshd").ignoreip]  # type: ignore[union-attr]
    assert nets == ["192.0.2.0/24", "198.51.100.1/32", "203.0.113.5/32"]


def test_atomic_write_keeps_mode_and_owner_and_replaces_the_inode(conf: Path) -> None:
    """The new file replaces the old by rename (new inode) with the same mode and owner."""
    conf.chmod(0o640)
    if os.geteuid() == 0:
        os.chown(conf, 4321, 4321)
    before = conf.stat()
    edit.jail_set(conf, "sshd", "maxretry", "4")
    after = conf.stat()
    assert after.st_ino != before.st_ino
    assert stat.S_IMODE(after.st_mode) == 0o640
    assert (after.st_uid, after.st_gid) == (before.st_uid, before.st_gid)
    assert sorted(p.name for p in conf.parent.iterdir()) == ["appliance.toml"]


def test_a_symlinked_config_is_edited_through_the_link(tmp_path: Path, conf: Path) -> None:
    """/etc/applianced/appliance.toml -> elsewhere: the target changes, the link stays."""
    link = tmp_path / "link.toml"
    link.symlink_to(conf)
    edit.jail_set(link, "sshd", "maxretry", "4")
    assert link.is_symlink() and "maxretry = 4\n" in conf.read_text()


@pytest.mark.parametrize(
    ("option", "text", "value"),
    [
        ("maxretry", "7", 7),
        ("maxretry", "seven", "seven"),
        ("bantime", "600", 600),
        ("bantime", "10m", "10m"),
        ("bantime", "1.5", 1.5),
        ("bantime_increment.factor", "2", 2.0),
        ("use_dns", "off", False),
        ("ports", "25, 465,1000-2000", [25, 465, "1000-2000"]),
        ("ports", "all", ["all"]),
        ("ignoreip", "", []),
        ("failregex", "a, b <HOST>", ["a, b <HOST>"]),
        ("failregex", '["a <HOST>", "b <HOST>"]', ["a <HOST>", "b <HOST>"]),
        ("protocol", "udp", "udp"),
    ],
)
def test_parse_value(option: str, text: str, value: object) -> None:
    """VALUE as typed: numbers, durations kept as strings, comma lists, TOML when quoted."""
    parsed = edit.parse_value(option, text)
    assert parsed == value and type(parsed) is type(value)


def test_cli_edit_without_a_daemon_says_it_applies_at_next_start(
    capsys: pytest.CaptureFixture[str], conf: Path, tmp_path: Path
) -> None:
    """`appliancectl jail set` with no daemon: written, exit 0, --json says so."""
    code = main(
        [
            "--config",
            str(conf),
            "--socket",
            str(tmp_path / "none.sock"),
            "jail",
            "set",
            "sshd",
            "maxretry",
            "2",
            "--json",
        ]
    )
    out = json.loads(capsys.readouterr().out)
    assert code == 0
    assert out["changed"] and out["reload"] == "daemon not running"
    assert out["changes"] == [{"table": "jails.sshd", "key": "maxretry", "old": 3, "new": 2}]


def test_cli_refusal_exit_codes(capsys: pytest.CaptureFixture[str], conf: Path) -> None:
    """A value the loader refuses exits 2 with file:line; an unknown jail exits 1."""
    code = main(["--config", str(conf), "jail", "set", "sshd", "maxretry", "x"])
    err = capsys.readouterr().err
    assert code == 2 and f"{conf}:" in err and "nothing written" in err
    code = main(["--config", str(conf), "whitelist", "add", "nojail", "192.0.2.1"])
    assert code == 1 and "no jail 'nojail'" in capsys.readouterr().err
    code = main(["--config", str(conf), "whitelist", "add", "192.0.2.1"])
    assert code == 2 and "--global" in capsys.readouterr().err
    assert conf.read_text() == SHIPPED


@pytest.mark.parametrize("verb", ["jail", "whitelist", "general"])
def test_help_has_examples(capsys: pytest.CaptureFixture[str], verb: str) -> None:
    """Each edit verb's --help ends with examples."""
    with pytest.raises(SystemExit):
        main([verb, "--help"])
    assert f"example:\n  appliancectl {verb} " in capsys.readouterr().out


def test_whitelist_knows_an_ipv4_mapped_spelling_is_the_ipv4_address(conf: Path) -> None:
    """::ffff:203.0.113.7 is 203.0.113.7, as the loader and the jails see it: no second entry,
    and remove finds the first."""
    edit.whitelist(conf, "sshd", "203.0.113.7", add=True)
    assert not edit.whitelist(conf, "sshd", "::ffff:203.0.113.7", add=True).changed
    edit.whitelist(conf, "sshd", "::ffff:203.0.113.7/128", add=False)
    assert diff(SHIPPED, conf.read_text()) == ([], ["ignoreip = []\n"])


def test_setting_usedns_replaces_the_older_use_dns(conf: Path) -> None:
    """`jail set sshd usedns warn` on a jail that says use_dns drops use_dns (both in one
    table are refused), and the other way round."""

    def sshd_table() -> str:
        return conf.read_text().split("[jails.sshd]")[1].split("\n[")[0]

    edit.jail_set(conf, "sshd", "use_dns", "true")
    result = edit.jail_set(conf, "sshd", "usedns", "warn")
    assert 'usedns = "warn"' in sshd_table() and "use_dns" not in sshd_table()
    assert result.config is not None and result.config.jail("sshd").usedns == "warn"
    edit.jail_set(conf, "sshd", "use_dns", "false")
    assert "usedns" not in sshd_table() and "use_dns = false" in sshd_table()


# A file as operators write them: no blank lines, the jail's table last, no [defaults].
TIGHT = """[[listeners]]
transport = "udp"
address = "127.0.0.1"
port = 5514
[jails.postfix-sasl]
filter = "postfix-sasl"
"""


@pytest.mark.parametrize("trailing", ["", "\n", "[daemon]\nstate_dir = '/tmp'\n"])
def test_jail_set_on_a_last_or_tight_table_adds_the_key(tmp_path: Path, trailing: str) -> None:
    """The jail's table last in the file, with or without a final newline, or followed by
    another table without a blank line: the key lands in the jail (was tomlkit's
    `Unable to insert at position 1`)."""
    path = tmp_path / "a.toml"
    text = TIGHT if trailing != "" else TIGHT.rstrip("\n")
    path.write_text(text + ("" if trailing == "\n" else trailing))
    edit.jail_set(path, "postfix-sasl", "hook", "forward")
    jail = load_config(path).jail("postfix-sasl")
    assert jail is not None and jail.hook == "forward"


def test_whitelist_global_without_defaults_adds_the_table(tmp_path: Path) -> None:
    """`whitelist add --global` on a file without [defaults] adds it (was `Unable to insert
    at position 0`)."""
    path = tmp_path / "a.toml"
    path.write_text(TIGHT)
    edit.whitelist(path, None, "192.0.2.10", add=True)
    assert '[defaults]\nignoreip = ["192.0.2.10"]\n' in path.read_text()
    jail = load_config(path).jail("postfix-sasl")
    assert jail is not None and [str(n) for n in jail.ignoreip] == ["192.0.2.10/32"]


def test_jail_unset_falls_back_to_defaults(
    capsys: pytest.CaptureFixture[str], conf: Path, tmp_path: Path
) -> None:
    """`jail unset sshd maxretry` removes the one line; the jail then takes [defaults]' 5."""
    sock = str(tmp_path / "none.sock")
    code = main(["--config", str(conf), "--socket", sock, "jail", "unset", "sshd", "maxretry"])
    assert code == 0
    assert "jails.sshd.maxretry: 3 -> (unset)" in capsys.readouterr().out
    assert diff(SHIPPED, conf.read_text()) == (["maxretry = 3\n"], [])
    sshd = load_config(conf).jail("sshd")
    assert sshd is not None and sshd.maxretry == 5
    code = main(["--config", str(conf), "--socket", sock, "jail", "unset", "sshd", "maxretry"])
    assert code == 0 and "already so; nothing changed" in capsys.readouterr().out


def test_jail_unset_refuses_an_option_without_a_default(
    capsys: pytest.CaptureFixture[str], conf: Path
) -> None:
    assert main(["--config", str(conf), "jail", "unset", "sshd", "filter"]) == 1
    err = capsys.readouterr().err
    assert "filter has no default to fall back to" in err
    assert "appliancectl jail set sshd filter VALUE" in err
    assert main(["--config", str(conf), "jail", "unset", "sshd"]) == 2
    assert "usage: appliancectl jail unset JAIL OPTION" in capsys.readouterr().err
    assert conf.read_text() == SHIPPED


def test_jail_get_shows_where_each_value_comes_from(
    capsys: pytest.CaptureFixture[str], conf: Path
) -> None:
    assert main(["--config", str(conf), "jail", "get", "sshd"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "maxretry                  = 3  # jails.sshd" in out
    assert 'bantime                   = "10m"  # defaults' in out
    assert 'hook                      = "input"  # built-in' in out
    assert "failregex                   not set: the filter's" in out
    assert main(["--config", str(conf), "jail", "get", "sshd", "bantime", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["options"] == {
        "bantime": {"value": "10m", "from": "defaults"}
    }
    assert main(["--config", str(conf), "jail", "get", "sshd", "nope"]) == 2
    assert "unknown jail option 'nope'" in capsys.readouterr().err
    assert main(["--config", str(conf), "jail", "get", "nojail"]) == 1
    assert "no jail 'nojail'" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("verb", "taught"),
    [
        ("jail", ["appliancectl jail get sshd\n", "appliancectl jail unset sshd bantime"]),
        ("whitelist", ["--global 198.51.100.0/24 --unban"]),
        ("why", ["appliancectl why 203.0.113.7/32"]),
        ("status", ["appliancectl status postfix-sasl --json"]),
    ],
)
def test_the_new_verbs_help_teaches_them(
    capsys: pytest.CaptureFixture[str], verb: str, taught: list[str]
) -> None:
    with pytest.raises(SystemExit):
        main([verb, "--help"])
    out = capsys.readouterr().out
    assert all(example in out for example in taught)
