"""``mine-agent demo``, the README's first command, shows readings flowing and stops by itself."""

from __future__ import annotations

import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.harness import env


@pytest.mark.slow
def test_demo_prints_windows_received_with_nothing_missing(tmp_path: Path) -> None:
    """Within a short run the receiver has verified batches and prints a window for every demo tag, and the
    agent (default end-to-end ack mode) deleted batches from its buffer on the receiver's signed acks."""
    out = subprocess.run([sys.executable, "-m", "agent.cli", "demo", "--dir", str(tmp_path), "--seconds", "12",
                          "--window", "5"], capture_output=True, text=True, env=env(), timeout=90, check=True)

    reports = re.findall(r"receiver: (\d+) batches, \d+ records, 0 duplicates, 0 rejected, missing \[\]", out.stdout)
    assert reports, out.stdout + out.stderr
    assert int(reports[-1]) >= 5
    for tag in ("plc1.ch4", "plc1.co", "plc1.o2", "plc1.water_level", "plc1.fan_speed"):
        assert tag in out.stdout
    assert (tmp_path / "receiver.sqlite").exists()
    with sqlite3.connect(tmp_path / "state" / "buffer.sqlite") as db:
        kept = db.execute("SELECT count(*) FROM batches").fetchone()[0]
    assert kept < int(reports[-1]), out.stdout + out.stderr
