"""applianced: a syslog receiver appliance that bans inline.

The package is laid out as the pipeline a message flows through:
``receiver`` (bytes -> SyslogMessage), ``rules`` (message, now -> ban decisions),
``enforcement`` (decisions -> kernel), ``conf`` (TOML -> frozen Config).
``service`` wires them together; ``control`` and ``cli`` are the operator's handle on it.
"""

__version__ = "0.1.0"
