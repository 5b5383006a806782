"""docs/config.md documents every key of [[alarms]], [[deadbands]] and [[calculated]] (the alarm table's columns
in docs/protocol.md are checked with the other tables', in tests/receiver/test_protocol_doc.py)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import BaseModel

from config.schema import AlarmRule, CalculatedTag, DeadbandRule

DOCS = Path(__file__).parent.parent.parent / "docs"
SECTIONS: dict[str, type[BaseModel]] = {"[[alarms]]": AlarmRule, "[[deadbands]]": DeadbandRule,
                                        "[[calculated]]": CalculatedTag}


@pytest.mark.parametrize(("heading", "model"), SECTIONS.items(), ids=list(SECTIONS))
def test_every_key_has_a_row(heading: str, model: type[BaseModel]) -> None:
    """Each key of the section's model has a row '| `key` |' under its heading in docs/config.md."""
    match = re.search(rf"^## {re.escape(heading)}\n(.*?)(?=^## )", (DOCS / "config.md").read_text(), re.M | re.S)
    assert match, f"docs/config.md has no heading {heading}"

    undocumented = [key for key in model.model_fields if f"| `{key}` |" not in match.group(1)]

    assert undocumented == []

