"""How long the property-based fuzz tests of the trust-boundary decoders run.

Every decoder that reads bytes from outside (frames, acks, configuration pushes, status and configuration-channel
messages) has a fuzz test marked ``fuzz`` that uses ``settings(max_examples=FUZZ_EXAMPLES)``. In the default
suite (and CI) they run briefly; on demand, longer::

    MINE_AGENT_FUZZ_EXAMPLES=100000 .venv/bin/python -m pytest -m fuzz -p no:timeout
"""

from __future__ import annotations

import os

FUZZ_EXAMPLES = int(os.environ.get("MINE_AGENT_FUZZ_EXAMPLES", "200"))
