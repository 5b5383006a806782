"""docs/config.md documents every key of [[alarms]], [[deadbands]] and [[calculated]]; docs/protocol.md lists the
alarm table's columns as the code writes them."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import BaseModel

from agent.pipeline.alarms import ALARM_COLUMNS
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


def test_alarm_columns_are_documented_in_order() -> None:
    """The alarm table in docs/protocol.md lists ALARM_COLUMNS, in order."""
    lines = (DOCS / "protocol.md").read_text().split("<!-- alarm-columns", 1)[1].splitlines()[1:]
    rows: list[str] = []
    for line in lines:
        if not line.startswith("|"):
            if rows:
                break
            continue
        rows.append(line.split("|")[1].strip().strip("`"))

    assert rows[2:] == ALARM_COLUMNS  # after the header and separator rows
