"""``appliancectl tls init``: writes a CA, a server and client certificates (``tlsinit.py``)
and prints the config snippets that use them. Offline; ``parser.py`` dispatches here.
"""

from __future__ import annotations

import argparse
import socket
from typing import Any

from applianced import tlsinit
from applianced.cli.client import EXIT_USAGE, CliError
from applianced.cli.output import out

__all__ = ["cmd_tls"]


def cmd_tls(args: argparse.Namespace) -> None:
    """``tls init``: CA, server and client certificates, then the snippets that use them."""
    names = args.server_name or [socket.getfqdn()]
    try:
        files = tlsinit.init_tls(args.dir, names, args.client or [], force=args.force)
    except tlsinit.TLSInitError as e:
        raise CliError(str(e), EXIT_USAGE) from None
    except OSError as e:
        raise CliError(f"cannot write into {args.dir}: {e}", EXIT_USAGE) from None
    data = {
        "directory": str(files.directory),
        "ca": {"cert": str(files.ca_cert), "key": str(files.ca_key)},
        "server": {
            "cert": str(files.server_cert),
            "key": str(files.server_key),
            "names": list(files.server_names),
        },
        "clients": {n: {"cert": str(c), "key": str(k)} for n, (c, k) in files.clients.items()},
        "config": tlsinit.config_snippet(files, args.port),
        "rsyslog": {n: tlsinit.rsyslog_snippet(files, n, args.port) for n in files.clients or [""]},
    }

    def human(d: dict[str, Any]) -> None:
        print(f"wrote the CA, the server certificate ({', '.join(files.server_names)})", end="")
        print(f" and {len(files.clients)} client certificate(s) into {d['directory']}")
        print(f"keep {files.ca_key.name} secret (better: offline); keys are mode 0600\n")
        print("# applianced: add to the config, then `appliancectl check` and reload")
        print(d["config"])
        for snippet in d["rsyslog"].values():
            print(snippet)

    out(args, data, human)
