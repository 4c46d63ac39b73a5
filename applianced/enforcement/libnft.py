"""libnftables, typed: one transaction of JSON commands or nft syntax, its refusal as an
EnforcementError an operator can act on, and the table's listings. Called by
``enforcement/nftables.py`` only.
"""

from __future__ import annotations

from typing import Any

from applianced.enforcement.nftlayout import FAMILY, JSON
from applianced.errors import EnforcementError

CHECK = (
    "Check that applianced runs as root or with CAP_NET_ADMIN, that the nf_tables kernel modules "
    "can be loaded, and what `nft list table inet {table}` shows."
)


def nft_call(nft: Any, commands: list[JSON] | str, what: str, table: str) -> tuple[str, Any]:
    """Run ``commands`` (JSON objects, or lines in nft syntax) as one libnftables transaction:
    nft's error text ("" when it was accepted) and its output. Raises EnforcementError when the
    binding cannot reach the library."""
    try:
        if isinstance(commands, str):
            rc, output, error = nft.cmd(commands)
        else:
            rc, output, error = nft.json_cmd({"nftables": commands})
    except (OSError, ValueError) as e:  # the binding could not reach the library, or parse
        check = CHECK.format(table=table)
        raise EnforcementError(f"nftables failed to {what}: {e}. {check}") from e
    if rc != 0:
        return str(error).strip() or f"return code {rc}", None
    return "", output


def refusal(what: str, error: str, table: str) -> EnforcementError:
    text = error if len(error) <= 2000 else error[:2000] + " [...]"
    return EnforcementError(f"nftables refused to {what}: {text}. {CHECK.format(table=table)}")


def nft_run(nft: Any, commands: list[JSON] | str, what: str, table: str) -> list[JSON]:
    """``nft_call``, raising EnforcementError when refused; the JSON objects it printed, if any."""
    error, output = nft_call(nft, commands, what, table)
    if error:
        raise refusal(what, error, table)
    if isinstance(output, dict):
        objects = output.get("nftables", [])
        return [o for o in objects if isinstance(o, dict)]
    return []


def nft_list(nft: Any, command: str, table: str, *, terse: bool) -> list[JSON]:
    """A listing in JSON (``terse`` leaves set elements out, and nft 1.0.6 then does not fetch
    them either)."""
    old = nft.set_terse_output(terse)
    try:
        return nft_run(nft, [{"list": _list_target(command, table)}], f"list {command}", table)
    finally:
        nft.set_terse_output(old)


def _list_target(command: str, table: str) -> JSON:
    if command == "table":
        return {"table": {"family": FAMILY, "name": table}}
    return {command: {"family": FAMILY}}
