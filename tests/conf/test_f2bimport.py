"""fail2ban jail trees into our TOML (conf/f2bimport.py, conf/filterfiles/f2bjails.py): the
order fail2ban reads its files in, [DEFAULT], [INCLUDES] and %(x)s; each value onto ours with
its origin; what is not carried; the trees after the admins' documents (tests/data/f2b-trees)
and Debian's stock jail.conf. Every result is loaded as `appliancectl check` loads it."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from applianced.conf.f2bimport import Imported, ImportedJail, import_tree
from applianced.conf.filterfiles.f2bactions import parse_actions
from applianced.conf.filterfiles.f2bjails import JailTreeError, read_jail_tree
from applianced.conf.load import load_config
from applianced.conf.schema import Config
from tests.debian_fail2ban import FetchError
from tests.debian_fail2ban import debian_filter_d as fetch_debian_filter_d

TREES = Path(__file__).parents[1] / "data" / "f2b-trees"

FILTER = """\
[Definition]
_daemon = demo
failregex = ^ \\S+ %(_daemon)s\\[\\d+\\]: auth failed from <HOST>$
"""


def tree(tmp_path: Path, files: dict[str, str]) -> Path:
    """A fail2ban tree in ``tmp_path/f2b`` with ``filter.d/demo.conf`` and ``files``."""
    root = tmp_path / "f2b"
    (root / "filter.d").mkdir(parents=True)
    (root / "filter.d" / "demo.conf").write_text(FILTER)
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def imported(root: Path, tmp_path: Path) -> tuple[Imported, Config]:
    """The import of ``root``, and the Config its text loads into from a file."""
    out = tmp_path / "appliance.toml"
    result = import_tree(root, out)
    out.write_text(result.text)
    return result, load_config(out)


def jail_of(result: Imported, name: str) -> ImportedJail:
    return next(j for j in result.jails if j.name == name)


def one_jail(tmp_path: Path, options: str, default: str = "") -> tuple[ImportedJail, Config]:
    """The import of a tree whose only jail ``demo`` has ``options``."""
    root = tree(
        tmp_path,
        {"jail.conf": f"[DEFAULT]\n{default}\n[demo]\nenabled = true\nfilter = demo\n{options}"},
    )
    result, config = imported(root, tmp_path)
    return jail_of(result, "demo"), config


def test_files_are_read_in_fail2bans_order_each_value_from_the_last(tmp_path: Path) -> None:
    """jail.conf, jail.d/*.conf, jail.local, jail.d/*.local: the last file that sets an option
    wins, and its file and line are the value's origin."""
    root = tree(
        tmp_path,
        {
            "jail.conf": "[DEFAULT]\nmaxretry = 2\nfindtime = 1m\nbantime = 1m\n"
            "[demo]\nfilter = demo\nenabled = false\n",
            "jail.d/a.conf": "[demo]\nenabled = true\nmaxretry = 3\nfindtime = 2m\n",
            "jail.d/b.local": "[demo]\nmaxretry = 7\n",
            "jail.local": "[demo]\nmaxretry = 5\nfindtime = 3m\n",
        },
    )
    t = read_jail_tree(root)
    assert [p.name for p in t.files] == ["jail.conf", "a.conf", "jail.local", "b.local"]
    result, config = imported(root, tmp_path)
    jail = jail_of(result, "demo")
    assert jail.keys["maxretry"] == 7 and jail.origins["maxretry"] == "maxretry, jail.d/b.local:2"
    assert jail.keys["findtime"] == "3m" and jail.origins["findtime"] == "findtime, jail.local:3"
    assert jail.origins["bantime"] == "bantime, jail.conf:4"
    j = config.jail("demo")
    assert j is not None and (j.maxretry, j.findtime, j.bantime) == (7, 180, 60)


def test_includes_default_and_interpolation_in_the_jails_section(tmp_path: Path) -> None:
    """[INCLUDES] before (paths-*.conf), %(x)s resolved in the jail's section over [DEFAULT],
    %(__name__)s the jail's name, as Debian's `filter = %(__name__)s[mode=%(mode)s]`, and
    %(known/x)s the value under the jail's own."""
    root = tree(
        tmp_path,
        {
            "paths-test.conf": "[DEFAULT]\nmail_ports = smtp,465\n",
            "jail.conf": "[INCLUDES]\nbefore = paths-test.conf\n"
            "[DEFAULT]\nmode = normal\nfilter = %(__name__)s[mode=%(mode)s]\n"
            "port = %(mail_ports)s,submission\n"
            "[demo]\nenabled = true\nmode = aggressive\n",
            "jail.local": "[DEFAULT]\nignoreip = 192.0.2.0/24\n"
            "[demo]\nignoreip = %(known/ignoreip)s 198.51.100.7\n",
        },
    )
    result, config = imported(root, tmp_path)
    jail = jail_of(result, "demo")
    assert jail.keys["filter"] == f"{root}/filter.d/demo.conf[mode=aggressive]"
    assert jail.keys["ports"] == [25, 465, 587]
    assert jail.keys["programs"] == ["demo"]  # from the filter's _daemon
    assert jail.keys["ignoreip"] == ["192.0.2.0/24", "198.51.100.7/32"]  # known/: [DEFAULT]'s
    j = config.jail("demo")
    assert j is not None and j.programs == ("demo",) and j.ports == ("25", "465", "587")


@pytest.mark.parametrize(
    ("bantime", "key", "value"),
    [
        ("600", "bantime", "10m"),
        ("10m", "bantime", "10m"),
        ("1h", "bantime", "1h"),
        ("1d", "bantime", "1d"),
        ("1w", "bantime", "1w"),
        ("1d 2h", "bantime", "1d2h"),
        ("-1", "max_count", 1),
    ],
)
def test_bantime_forms(tmp_path: Path, bantime: str, key: str, value: Any) -> None:
    """Suffixed and plain seconds; fail2ban's -1 (permanent) is max_count = 1 here."""
    jail, config = one_jail(tmp_path, f"bantime = {bantime}\n")
    assert jail.keys[key] == value
    j = config.jail("demo")
    assert j is not None
    assert j.max_count == (1 if bantime == "-1" else 0)


def test_bantime_increment_and_its_options(tmp_path: Path) -> None:
    """increment, maxtime, rndtime carried; multipliers 1 3 9 27 are factor 3; overalljails
    is reported (earlier bans count per jail here)."""
    jail, config = one_jail(
        tmp_path,
        "bantime.increment = true\nbantime.maxtime = 2d\nbantime.rndtime = 5m\n"
        "bantime.multipliers = 1 3 9 27\nbantime.overalljails = true\n",
    )
    assert jail.keys["bantime_increment"] == {"enabled": True, "factor": 3.0, "maxtime": "2d"}
    assert jail.keys["bantime_jitter"] == "5m"
    assert any("overalljails" in n for n in jail.not_carried)
    j = config.jail("demo")
    assert j is not None and j.bantime_increment.factor == 3.0
    assert (j.bantime_increment.maxtime, j.bantime_jitter) == (172800, 300)


def test_increment_off_unless_fail2ban_sets_it(tmp_path: Path) -> None:
    """fail2ban's default is no escalation, ours is: the import writes it off."""
    jail, config = one_jail(tmp_path, "")
    assert jail.keys["bantime_increment"] == {"enabled": False}
    j = config.jail("demo")
    assert j is not None and not j.bantime_increment.enabled


def test_a_formula_and_a_factor_are_reported(tmp_path: Path) -> None:
    jail, _ = one_jail(
        tmp_path,
        "bantime.increment = true\nbantime.factor = 3\n"
        "bantime.formula = ban.Time * math.exp(float(ban.Count+1)*banFactor)\n",
    )
    notes = " ".join(jail.not_carried)
    assert "bantime.formula" in notes and "bantime.factor = 3" in notes


def test_ignoreip_networks_kept_host_names_reported(tmp_path: Path) -> None:
    jail, config = one_jail(
        tmp_path, "", default="ignoreip = 127.0.0.1/8 10.0.0.1/8, 2001:db8::1 mx.example.org\n"
    )
    assert jail.keys["ignoreip"] == ["127.0.0.0/8", "10.0.0.0/8", "2001:db8::1/128"]
    assert any("mx.example.org" in n for n in jail.not_carried)
    j = config.jail("demo")
    assert j is not None and len(j.ignoreip) == 3


def test_action_parameters_give_ports_and_protocol(tmp_path: Path) -> None:
    """Two ban actions (Kerio's kerio-auth): their ports together; tcp,udp is both."""
    jail, config = one_jail(
        tmp_path,
        'action = iptables-multiport[name=SMTP, port="smtp,465,submission", protocol="tcp,udp"]\n'
        '         nftables[type=multiport, name=HTTP, port="80,443", protocol=tcp]\n',
    )
    assert jail.keys["ports"] == [25, 465, 587, 80, 443]
    assert jail.keys["protocol"] == "both"
    assert jail.not_carried == []
    j = config.jail("demo")
    assert j is not None and j.protocol == "both"


def test_allports_and_whole_ranges_are_every_port(tmp_path: Path) -> None:
    jail, _ = one_jail(tmp_path, 'action = nftables-allports[name=X, protocol="tcp"]\n')
    assert jail.keys["ports"] == ["all"] and "protocol" not in jail.keys
    jail, _ = one_jail(tmp_path / "b", "port = 0:65535\n")
    assert jail.keys["ports"] == ["all"]


def test_a_custom_action_is_reported_its_port_still_closed(tmp_path: Path) -> None:
    jail, _ = one_jail(tmp_path, 'action = mc-custom[name=demo, port="80,443"]\n')
    assert jail.keys["ports"] == [80, 443]
    assert any("mc-custom" in n for n in jail.not_carried)


def test_action_mwl_is_a_mail_with_lines_and_fills_notify(tmp_path: Path) -> None:
    """Debian's action_mwl: the ban action's port, the mail action's dest and sender; mta =
    sendmail delivers with sendmail here too."""
    default = (
        "destemail = postmaster@example.org\nsender = fail2ban@example.org\nmta = sendmail\n"
        "port = 0:65535\nprotocol = tcp\nbanaction = nftables-multiport\n"
        'action_ = %(banaction)s[port="%(port)s", protocol="%(protocol)s"]\n'
        "action_mwl = %(action_)s\n"
        '             %(mta)s-whois-lines[sender="%(sender)s", dest="%(destemail)s", '
        'logpath="%(logpath)s"]\n'
    )
    jail, config = one_jail(
        tmp_path,
        "port = smtp,465,submission\naction = %(action_mwl)s\nlogpath = /var/log/mail.log\n",
        default=default,
    )
    assert jail.keys["notify"] == ["mail-whois-lines"]
    assert jail.keys["ports"] == [25, 465, 587]
    assert config.notify.to == ("postmaster@example.org",)
    assert config.notify.sender == "fail2ban@example.org"
    assert config.notify.sendmail == Path("/usr/sbin/sendmail")
    j = config.jail("demo")
    assert j is not None and j.notify == ("mail-whois-lines",)


@pytest.mark.parametrize("usedns", ["yes", "warn", "no"])
def test_usedns_is_carried_as_it_is(tmp_path: Path, usedns: str) -> None:
    """fail2ban's three values mean here what they meant there: a jail with usedns = no must
    not come out resolving host names (our default is fail2ban's "warn")."""
    jail, config = one_jail(tmp_path, f"usedns = {usedns}\n")
    assert jail.keys["usedns"] == usedns and jail.not_carried == []
    j = config.jail("demo")
    assert j is not None and j.usedns == usedns


def test_usedns_raw_matches_addresses_only_and_says_so(tmp_path: Path) -> None:
    jail, config = one_jail(tmp_path, "usedns = raw\n")
    assert jail.keys["usedns"] == "no"
    assert any("usedns = raw" in note for note in jail.not_carried)
    j = config.jail("demo")
    assert j is not None and j.usedns == "no"


def test_what_has_no_counterpart_is_reported_in_the_jails_comment(tmp_path: Path) -> None:
    jail, _ = one_jail(
        tmp_path,
        "ignorecommand = /usr/local/bin/trusted <ip>\nbackend = systemd\n"
        "journalmatch = _SYSTEMD_UNIT=sshd.service\n",
    )
    notes = " ".join(jail.not_carried)
    for what in ("ignorecommand", "backend = systemd", "journalmatch"):
        assert what in notes
    result = import_tree(tmp_path / "f2b", tmp_path / "x.toml")
    assert "# not carried: ignorecommand = /usr/local/bin/trusted <ip>" in result.text


def test_a_jail_whose_filter_does_not_load_is_left_out_with_why(tmp_path: Path) -> None:
    """A filter our loader refuses (a maxlines above 100): that jail only is left out."""
    root = tree(
        tmp_path,
        {
            "filter.d/twice.conf": "[Definition]\nfailregex = from <HOST>\nmaxlines = 500\n",
            "jail.conf": "[demo]\nenabled = true\nfilter = demo\n"
            "[twice]\nenabled = true\nfilter = twice\n"
            "[gone]\nenabled = true\nfilter = nosuch\n"
            "[off]\nenabled = false\nfilter = nosuch\n",
        },
    )
    result, config = imported(root, tmp_path)
    assert [j.name for j in config.jails] == ["demo"]
    assert set(result.skipped) == {"twice", "gone"}
    assert "no such fail2ban filter file" in result.skipped["gone"]
    assert "# not imported: jail twice: does not load here" in result.text


def test_an_undefined_substitution_leaves_out_its_jail_or_its_option(tmp_path: Path) -> None:
    """A filter that cannot be resolved leaves its jail out; another option is reported."""
    root = tree(
        tmp_path,
        {
            "jail.conf": "[demo]\nenabled = true\nfilter = demo\nbantime = %(nosuch)s\n"
            "[lost]\nenabled = true\nfilter = %(nosuch)s\n",
        },
    )
    result, config = imported(root, tmp_path)
    assert [j.name for j in config.jails] == ["demo"]
    assert "jail.conf:7: %(nosuch)s is not defined" in result.skipped["lost"]
    assert any(n.startswith("bantime: ") for n in jail_of(result, "demo").not_carried)


def test_an_unreadable_tree_names_the_file_and_line(tmp_path: Path) -> None:
    with pytest.raises(JailTreeError, match=r"no jail\.conf or jail\.local"):
        read_jail_tree(tmp_path)
    (tmp_path / "jail.local").write_text("# no section\nenabled = true\n")
    with pytest.raises(JailTreeError, match=r"jail\.local:2: not a fail2ban config file"):
        read_jail_tree(tmp_path)


def test_parse_actions() -> None:
    assert parse_actions("a[x=\"1, 2\", y=3]\n  b  c[z='q]']") == [
        ("a", {"x": "1, 2", "y": "3"}),
        ("b", {}),
        ("c", {"z": "q]"}),
    ]


def test_options_added_to_an_action_are_its_own() -> None:
    """Debian's nsd, asterisk, named-refused: ``%(default/action_)s[name=..., protocol=...]``
    expands to ``banaction[port=..., protocol=...][name=..., protocol="udp"]``: one action
    whose later options win, not a second action without a name."""
    assert parse_actions('m[port="53", protocol="tcp"][name=nsd-udp, protocol="udp"]') == [
        ("m", {"port": "53", "protocol": "udp", "name": "nsd-udp"}),
    ]


def test_debians_nsd_jail_closes_both_protocols_with_nothing_reported(tmp_path: Path) -> None:
    default = (
        "banaction = iptables-multiport\nprotocol = tcp\nchain = INPUT\n"
        'action_ = %(banaction)s[port="%(port)s", protocol="%(protocol)s", chain="%(chain)s"]\n'
        "action = %(action_)s\n"
    )
    jail, _ = one_jail(
        tmp_path,
        "port = 53\n"
        'action_ = %(default/action_)s[name=%(__name__)s-tcp, protocol="tcp"]\n'
        '          %(default/action_)s[name=%(__name__)s-udp, protocol="udp"]\n',
        default=default,
    )
    assert jail.keys["ports"] == [53] and jail.keys["protocol"] == "both"
    assert jail.not_carried == []


def test_the_mailcleaner_tree(tmp_path: Path) -> None:
    """MailCleaner's jails: the custom mc-custom banaction reported, its ports closed; the
    exim2-repeater's one-year times; dovecot's escalation with overalljails reported."""
    result, config = imported(TREES / "mailcleaner", tmp_path)
    assert [j.name for j in config.enabled_jails] == [
        "mc-webauth",
        "mc-ssh",
        "mc-exim",
        "mc-dovecot",
        "exim2-repeater",
    ]
    web, ssh = config.jail("mc-webauth"), config.jail("mc-ssh")
    assert web is not None and (web.maxretry, web.findtime, web.bantime) == (10, 3600, 86400)
    assert web.ports == ("80", "443") and web.programs == ()
    assert ssh is not None and ssh.ports == ("22",) and ssh.programs == ("sshd",)
    repeater = config.jail("exim2-repeater")
    assert repeater is not None and repeater.findtime == repeater.bantime == 31536000
    assert any("iptables-repeater" in n for n in jail_of(result, "exim2-repeater").not_carried)
    assert all(any("mc-custom" in n for n in j.not_carried) for j in result.jails[:4])
    dovecot = config.jail("mc-dovecot")
    assert dovecot is not None and dovecot.bantime_increment.enabled
    assert dovecot.ports == ("110", "995", "143", "993")


def test_the_qmail_notes_tree(tmp_path: Path) -> None:
    """Each jail's nftables action gives its ports, sendmail-whois-lines its mails to
    [DEFAULT]'s destemail; jail.d/*.local is read after jail.local."""
    result, config = imported(TREES / "qmail", tmp_path)
    assert [j.name for j in config.enabled_jails] == [
        "qmail-smtp",
        "qmail-submission",
        "vpopmail",
        "qmailadmin",
        "roundcube-auth",
        "dovecot-pop3",
        "dovecot-imap",
    ]
    assert config.notify.to == ("postmaster@example.org",)
    assert config.notify.sender == "fail2ban@example.org"
    for jail in config.enabled_jails:
        assert jail.notify == ("mail-whois-lines",)
        assert {str(n) for n in jail.ignoreip} == {"127.0.0.0/8", "10.0.0.0/8", "203.0.113.116/32"}
    qma, pop = config.jail("qmailadmin"), config.jail("dovecot-pop3")
    assert qma is not None and qma.ports == ("80", "443") and qma.maxretry == 4
    assert pop is not None and pop.ports == ("993", "995") and pop.bantime == 3600
    assert jail_of(result, "qmail-submission").logpath == "/var/log/maillog"
    assert all(j.not_carried == [] for j in result.jails)


def test_the_kerio_tree(tmp_path: Path) -> None:
    """maxretry = 0 (a ban at the first failure) is 1 here, said so; kerio-auth's two actions
    close both port sets; spam-smtp's filter file is missing: left out, with why."""
    result, config = imported(TREES / "kerio", tmp_path)
    assert [j.name for j in config.jails] == ["spam-harvest", "spam-relay", "kerio-auth"]
    harvest, auth = config.jail("spam-harvest"), config.jail("kerio-auth")
    assert harvest is not None and harvest.maxretry == 1 and harvest.bantime == 604800
    assert any("maxretry = 0" in n for n in jail_of(result, "spam-harvest").not_carried)
    assert auth is not None and auth.ports == ("25", "465", "587", "80", "443")
    assert "spam-smtp" in result.skipped and "w00tw00t" not in result.skipped


@pytest.fixture(scope="module")
def debian_tree() -> Path:
    try:
        return fetch_debian_filter_d().parent
    except FetchError as e:
        pytest.skip(str(e))


def test_every_debian_jail_enabled_imports_and_loads(tmp_path: Path, debian_tree: Path) -> None:
    """All of Debian's stock jails enabled in [DEFAULT]: each imports and loads, and the one
    value not carried is apache-fakegooglebot's ignorecommand (README, Moving from fail2ban)."""
    root = tmp_path / "fail2ban"
    shutil.copytree(debian_tree, root)
    (root / "jail.local").write_text("[DEFAULT]\nenabled = true\n")
    result, config = imported(root, tmp_path)
    assert result.skipped == {} and len(config.enabled_jails) == len(result.jails) == 91
    notes = {j.name: j.not_carried for j in result.jails if j.not_carried}
    assert list(notes) == ["apache-fakegooglebot"]
    assert notes["apache-fakegooglebot"][0].startswith("ignorecommand:")


def test_debians_stock_jail_conf_with_a_jail_local(tmp_path: Path, debian_tree: Path) -> None:
    """Debian's jail.conf, paths-debian.conf and jail.d/defaults-debian.conf as shipped, and a
    jail.local enabling postfix (with action_mwl) and dovecot: sshd, postfix and dovecot,
    with Debian's filters from its filter.d, load here."""
    root = tmp_path / "fail2ban"
    shutil.copytree(debian_tree, root)
    (root / "jail.local").write_text(
        "[DEFAULT]\nbantime = 1h\ndestemail = postmaster@example.org\n"
        "[postfix]\nenabled = true\naction = %(action_mwl)s\n"
        "[dovecot]\nenabled = true\nbantime.increment = true\n"
    )
    result, config = imported(root, tmp_path)
    assert [j.name for j in config.enabled_jails] == ["sshd", "postfix", "dovecot"]
    sshd, postfix, dovecot = config.enabled_jails
    assert sshd.filter == f"{root}/filter.d/sshd.conf[mode=normal]"
    assert sshd.ports == ("22",) and sshd.programs == ("sshd",) and sshd.bantime == 3600
    assert postfix.filter == f"{root}/filter.d/postfix.conf[mode=more]"
    assert postfix.ports == ("25", "465", "587") and postfix.notify == ("mail-whois-lines",)
    assert dovecot.ports == ("110", "995", "143", "993", "587", "465", "4190")
    assert dovecot.bantime_increment.enabled and not postfix.bantime_increment.enabled
    assert config.notify.to == ("postmaster@example.org",)
    assert any("fq-hostname" in n for n in result.not_carried)  # sender root@<fq-hostname>
    assert jail_of(result, "sshd").origins["ports"].startswith("action, jail.conf:")
