"""conf: the TOML configuration file -> a frozen Config (schema.py, load.py), and filter files."""
