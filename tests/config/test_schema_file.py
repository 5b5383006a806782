"""The committed JSON Schema matches the models, and carries what editors need to help a technician."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

import pytest

from agent.cli.config import schema_text
from config.schema import SCHEMA_ID

SCHEMA_FILE = Path(__file__).parent.parent.parent / "config" / "mine-agent.schema.json"
REGENERATE = "mine-agent config schema --output config/mine-agent.schema.json"


def test_committed_schema_is_up_to_date() -> None:
    """config/mine-agent.schema.json is exactly what the models generate."""
    committed = SCHEMA_FILE.read_text(encoding="utf-8")

    assert committed == schema_text(), f"the JSON Schema is out of date; regenerate it with: {REGENERATE}"


def test_schema_declares_draft_id_and_title() -> None:
    """The schema names its draft (2020-12), its $id and a title."""
    schema = json.loads(schema_text())

    assert (schema["$schema"], schema["$id"], schema["title"]) == (
        "https://json-schema.org/draft/2020-12/schema",
        SCHEMA_ID,
        "mine-agent configuration",
    )


def test_every_spine_setting_has_a_description() -> None:
    """Each key of the gateway, mqtt, tls, buffer and pipeline tables has a description for editor hovers."""
    defs: dict[str, Any] = json.loads(schema_text())["$defs"]
    spine = ["GatewayConfig", "MqttConfig", "TlsConfig", "BufferConfig", "PipelineConfig"]

    undescribed = [
        f"{model}.{key}"
        for model in spine
        for key, prop in defs[model]["properties"].items()
        if not prop.get("description")
    ]

    assert undescribed == []


def test_unknown_keys_are_refused_by_the_schema() -> None:
    """Every table in the schema forbids unknown keys, as the loader does, so editors flag typos too."""
    defs: dict[str, Any] = json.loads(schema_text())["$defs"]

    open_tables = [
        name
        for name, d in defs.items()
        if d.get("type") == "object" and d.get("additionalProperties", True) is not False
    ]

    assert open_tables == []


# Golden cases whose problem needs the loader (a computed rule), not expressible in JSON Schema.
LOADER_ONLY_CASES = {"buffer_too_small", "not_finite_number", "window_not_divisor_of_day"}
CASES_DIR = Path(__file__).parent.parent / "config_cases"
EXAMPLES_DIR = Path(__file__).parent.parent.parent / "config" / "examples"


def _schema_errors(toml_path: Path) -> list[str]:
    import jsonschema  # a test dependency: editors check files against the same schema
    validator = jsonschema.Draft202012Validator(json.loads(schema_text()))
    return [error.message for error in validator.iter_errors(tomllib.loads(toml_path.read_text()))]


@pytest.mark.parametrize("example", sorted(EXAMPLES_DIR.glob("*.toml")), ids=lambda p: p.name)
def test_editor_accepts_every_example(example: Path) -> None:
    """A JSON Schema validator (as in an editor) finds nothing wrong with the shipped examples."""
    assert _schema_errors(example) == []


def _editor_visible_cases() -> list[Path]:
    cases = []
    for case in sorted(CASES_DIR.glob("*/agent.toml")):
        try:
            tomllib.loads(case.read_text())
        except tomllib.TOMLDecodeError:
            continue  # the editor's TOML parser reports these itself
        if case.parent.name not in LOADER_ONLY_CASES:
            cases.append(case)
    return cases


@pytest.mark.parametrize("case", _editor_visible_cases(), ids=lambda p: p.parent.name)
def test_editor_flags_broken_golden_case(case: Path) -> None:
    """The schema alone flags the golden broken configs, so editors underline what the loader would refuse."""
    assert _schema_errors(case) != []
