"""``python -m agent.cli``: the ``mine-agent`` command line."""

import sys

from agent.cli import main

sys.exit(main())
