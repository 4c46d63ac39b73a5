"""The keys a jail's table (``[jails.NAME]``) and ``[defaults]`` accept, and the options
``appliancectl jail set`` edits. The loader (``conf/jailconf.py``) refuses any other key, the
editor (``conf/edit.py``) and the CLI's help name these; kept apart so that the help imports
nothing else.
"""

from __future__ import annotations

__all__ = ["INCREMENT_KEYS", "JAIL_KEYS", "JAIL_OPTIONS", "POLICY_KEYS"]

# [defaults] and a jail: the policy, inherited by every jail that does not set it.
POLICY_KEYS = {
    "bantime",
    "findtime",
    "maxretry",
    "ignoreip",
    "bantime_increment",
    "max_count",
    "findtime_history",
    "max_tracked",
    "ipv6_prefix",
    "use_dns",
    "usedns",
    "ports",
    "protocol",
    "filter_dir",
    "hook",
    "verdict",
    "bantime_jitter",
    "notify",
    "log_found",
}
INCREMENT_KEYS = {"enabled", "factor", "maxtime"}  # [*.bantime_increment]
JAIL_KEYS = POLICY_KEYS | {"enabled", "filter", "failregex", "ignoreregex", "programs", "senders"}
JAIL_OPTIONS: tuple[str, ...] = tuple(
    sorted((JAIL_KEYS - {"bantime_increment"}) | {f"bantime_increment.{k}" for k in INCREMENT_KEYS})
)
