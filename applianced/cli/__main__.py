"""``python -m applianced.cli``: the same as ``appliancectl``."""

import sys

from applianced.cli.parser import main

sys.exit(main())
