"""``python -m labkit ...``: the lab's command line (``labkit.lab.cli``)."""

import sys

from .lab.cli import main

sys.exit(main())
