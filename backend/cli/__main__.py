"""``python -m backend.cli``: the ``mine-backend`` command line."""

import sys

from backend.cli import main

sys.exit(main())
