"""``python -m natrl.bench``: the benchmark without the natrl console script."""

import sys

from natrl.bench import main

sys.exit(main())
