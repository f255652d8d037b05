"""``python -m natrl.cli``: the same command line as ``natrl``."""

import sys

from natrl.cli import main

sys.exit(main())
