"""``python -m annexsync``."""

import sys

from annexsync.cli.main import main

sys.exit(main())
