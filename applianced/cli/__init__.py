"""``appliancectl``: the operator's command line.

Online verbs talk to the running daemon over the control socket (``control.py`` is the server):
status, banned, ban, unban, blacklist, why, flush, reload, notify test. Offline verbs need no
daemon: ``check`` (validate a config), ``parse`` (syslog messages -> fields), ``test-filter`` (a
filter or a jail over a log file) and ``tls init``. The config edits (``jail``, ``whitelist``,
``general``, in ``conf/edit.py``) write the file, then ask a running daemon to reload. Every verb
has ``--json`` for scripts; errors go to stderr (one JSON object with ``--json``: a code and a
message) with a non-zero exit: 1 for a refused request, 2 for bad usage or config, 3 when the
daemon is down.

One module per group of verbs: ``parser`` (arguments, dispatch, ``main``), ``client`` (the
control socket, ``CliError``), ``output``, ``online``, ``edits``, ``offline`` (check, parse),
``testfilter``, ``tls``. None imports Twisted or the daemon's modules; ``tls init`` alone loads
the certificate code.
"""

from __future__ import annotations

from applianced.cli.parser import main

__all__ = ["main"]
