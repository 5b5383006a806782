"""docs/config.md documents every key of the top-level sections, so the reference cannot silently fall behind
the schema (driver keys are documented in each driver's README)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import BaseModel

from config.schema import (
    BufferConfig,
    GatewayConfig,
    HealthConfig,
    MqttConfig,
    PipelineConfig,
    RemoteConfig,
    TlsConfig,
)

DOC = Path(__file__).parent.parent.parent / "docs" / "config.md"
SECTIONS: dict[str, type[BaseModel]] = {
    "[gateway]": GatewayConfig,
    "[mqtt]": MqttConfig,
    "[mqtt.tls]": TlsConfig,
    "[buffer]": BufferConfig,
    "[pipeline]": PipelineConfig,
    "[health]": HealthConfig,
    "[remote_config]": RemoteConfig,
}


def _section(heading: str) -> str:
    """The text under the heading '## <heading>' or '### <heading>', up to the next heading."""
    match = re.search(rf"^#{{2,3}} {re.escape(heading)}\n(.*?)(?=^#{{2,3}} )", DOC.read_text(), re.M | re.S)
    assert match, f"docs/config.md has no heading {heading}"
    return match.group(1)


@pytest.mark.parametrize(("heading", "model"), SECTIONS.items(), ids=list(SECTIONS))
def test_every_key_of_the_section_has_a_table_row(heading: str, model: type[BaseModel]) -> None:
    """Each key of the section's model has a row '| `key` | ...' under the section's heading."""
    text = _section(heading)

    undocumented = [key for key in model.model_fields if f"| `{key}` |" not in text]

    assert undocumented == []
