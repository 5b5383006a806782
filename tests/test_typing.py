"""The product code type-checks: mypy over agent, backend, buffer, config and drivers, as configured in
pyproject.toml ([tool.mypy]: the pydantic plugin, every ignore with its code, unused ignores refused)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_product_code_type_checks(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--cache-dir", str(tmp_path / "mypy-cache")],
        cwd=ROOT, capture_output=True, text=True, timeout=600, check=False,
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
