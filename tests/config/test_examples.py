"""Every example configuration shipped in config/examples/ is valid (examples added later are covered too)."""

from __future__ import annotations

from pathlib import Path

import pytest

from config.loader import load_config

EXAMPLES_DIR = Path(__file__).parent.parent.parent / "config" / "examples"
EXAMPLES = sorted(EXAMPLES_DIR.glob("*.toml"))


def test_the_spine_example_exists() -> None:
    """The commented gateway example is present, so the loop below cannot pass by running nothing."""
    assert EXAMPLES_DIR / "gateway.toml" in EXAMPLES


@pytest.mark.parametrize("example", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_loads(example: Path) -> None:
    """The example passes validation as the agent would load it."""
    config = load_config(example)

    assert config.devices


@pytest.mark.parametrize("example", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_points_editors_at_the_schema(example: Path) -> None:
    """The example's first line is Taplo's schema directive, so editors complete and check it."""
    first_line = example.read_text(encoding="utf-8").splitlines()[0]

    assert first_line == "#:schema ../mine-agent.schema.json"
