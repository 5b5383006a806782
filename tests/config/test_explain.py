"""config.explain: wording rules that the golden cases do not pin, on small models of the tests' own."""

from __future__ import annotations

import datetime as dt
import json
import tomllib
from typing import Any

import pytest
from pydantic import Field, SecretStr, ValidationError, model_validator

from agent.core.errors import ConfigProblem
from agent.core.fields import ConfigValueError, Name, StrictModel
from config.explain import explain_errors, format_key, show_value
from config.locate import locate_keys


class _Sensor(StrictModel):
    name: Name
    token: SecretStr | None = None


class _Alarm(StrictModel):
    sensor: str = Field(description="Name of a sensor of this file.")


class _Root(StrictModel):
    sensors: list[_Sensor] = Field(default_factory=list)
    alarms: dict[Name, _Alarm] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _alarms_name_sensors(self) -> _Root:
        names = [s.name for s in self.sensors]
        for key, alarm in self.alarms.items():
            if alarm.sensor not in names:
                raise ConfigValueError(
                    "no such sensor",
                    key=("alarms", key, "sensor"),
                    got=repr(alarm.sensor),
                    allowed=", ".join(map(repr, names)),
                )
        return self


def _problems(text: str) -> list[ConfigProblem]:
    data = tomllib.loads(text)
    with pytest.raises(ValidationError) as caught:
        _Root.model_validate_json(json.dumps(data), strict=True)
    errors = caught.value.errors(include_url=False)
    return explain_errors(errors, data=data, locator=locate_keys(text), file="t.toml", model=_Root)


def test_cross_section_rule_points_at_the_referring_key() -> None:
    """A whole-config validator raising ConfigValueError(key=...) is reported at that key's line."""
    text = '[[sensors]]\nname = "a"\n\n[alarms.high]\nsensor = "b"\n'

    assert [str(p) for p in _problems(text)] == [
        "t.toml:5: alarms.high.sensor: no such sensor (got 'b'; allowed: 'a')"
    ]


def test_secret_field_value_is_masked_in_type_errors() -> None:
    """A SecretStr field given a wrong type shows *** instead of its value."""
    text = '[[sensors]]\nname = "a"\ntoken = 123456\n'

    assert [str(p) for p in _problems(text)] == [
        "t.toml:3: sensors[0].token: wrong type (got ***; allowed: a string in quotes)"
    ]


def test_problems_are_sorted_by_line_and_deduplicated() -> None:
    """Problems come out in file order, each once."""
    text = '[alarms."x y"]\nsensor = 1\n\n[[sensors]]\nname = "9"\n'

    assert [p.line for p in _problems(text)] == [1, 2, 5]


@pytest.mark.parametrize(
    ("path", "text"),
    [
        (("devices", "plc1", "tags", 3, "address"), "devices.plc1.tags[3].address"),
        (("devices", "plc 1"), 'devices."plc 1"'),
        (("a", 'q"uote'), 'a."q\\"uote"'),
        ((), ""),
    ],
)
def test_key_paths_read_like_toml(path: tuple[str | int, ...], text: str) -> None:
    """Key paths use dots, [i] for array entries, and TOML quoting where a name needs it."""
    assert format_key(path) == text


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (True, "true"),
        (70000, "70000"),
        (1.5, "1.5"),
        ("modbus", "'modbus'"),
        ("x" * 100, repr("x" * 57 + "...")),
        ({"a": 1}, "a table"),
        ([1, 2], "[1, 2]"),
        (list(range(100)), "an array of 100 items"),
        (dt.date(2026, 11, 23), "2026-11-23"),
    ],
)
def test_values_are_shown_as_toml_writes_them(value: Any, text: str) -> None:
    """Values appear in TOML spelling (true, not True), shortened when long."""
    assert show_value(value) == text
