"""Golden configuration cases: every ``tests/config_cases/<case>/agent.toml`` that has a ``load.err`` is
loaded by the real loader and must fail with exactly that text. Adding a regression means adding a folder
(see ``tests/config_cases/README.md``).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.core.errors import ConfigError
from config.loader import load_config

CASES_DIR = Path(__file__).parent.parent / "config_cases"
CASES = sorted(p.parent for p in CASES_DIR.glob("*/load.err"))


def test_cases_exist() -> None:
    """The golden case folder is found, so the loop below cannot pass by running nothing."""
    assert len(CASES) >= 10


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_config_case_fails_with_expected_text(case: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The case's agent.toml is rejected with exactly the problems listed in its load.err."""
    monkeypatch.chdir(case)  # messages then name the file as a technician would type it: agent.toml
    expected = (case / "load.err").read_text(encoding="utf-8")

    with pytest.raises(ConfigError) as caught:
        load_config(Path("agent.toml"))

    assert expected == str(caught.value) + "\n"
