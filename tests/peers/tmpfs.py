"""A small real file system for disk-pressure tests: a tmpfs of a given size mounted on a test's folder.

Mounting needs root; where it is refused the test is skipped with the reason, never passed."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest


@contextlib.contextmanager
def tmpfs(mountpoint: Path, size_mib: int) -> Iterator[Path]:
    """Mount a fresh ``size_mib`` MiB tmpfs on ``mountpoint`` (created if absent); unmount it afterwards."""
    mountpoint.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        pytest.skip(f"mounting a {size_mib} MiB tmpfs needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mib}m", "tmpfs", str(mountpoint)],
                          capture_output=True, check=False, timeout=30)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", "-l", str(mountpoint)], check=False, timeout=30)
