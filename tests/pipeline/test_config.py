"""[[alarms]], [[deadbands]] and [[calculated]] are validated at load with errors naming file, line and key."""

from __future__ import annotations

import pytest

from agent.core.clock import FakeClock
from agent.core.errors import ConfigError
from agent.core.sample import Sample
from agent.pipeline.pipeline import Pipeline
from config.loader import parse_config

BASE = """
[gateway]
id = "gw1"
key_file = "/etc/mine-agent/gateway.key"
[mqtt]
host = "broker.example.net"
archive_keys_file = "/etc/mine-agent/archive.keys"
[devices.gas1]
protocol = "modbus-tcp"
host = "127.0.0.1"
unit = 1
poll_interval_s = 1.0
[[devices.gas1.tags]]
name = "ch4"
address = 0
type = "float32"
[[devices.gas1.tags]]
name = "flow"
address = 2
type = "float32"
"""
FIRST_EXTRA_LINE = BASE.count("\n") + 2  # the line after the section header of the fragment


@pytest.mark.parametrize(("fragment", "expected"), [
    ('[[alarms]]\ntag = "gas1.ch5"\nhigh = 1.0\n',
     f"agent.toml:{FIRST_EXTRA_LINE}: alarms[0].tag: no such tag (got 'gas1.ch5'; allowed: did you mean 'gas1.ch4'?)"),
    ('[[alarms]]\ntag = "gas1.ch4"\nhigh = 1.0\nhigh_high = 0.5\n',
     f"agent.toml:{FIRST_EXTRA_LINE + 2}: alarms[0].high_high: must be more than high (1)"),
    ('[[alarms]]\ntag = "gas1.ch4"\n', "alarms[0].tag: no rule set"),
    ('[[alarms]]\ntag = "gas1.ch4"\nstuck_band = 0.1\n', "alarms[0].stuck_band: stuck_band needs stuck_s"),
    ('[[alarms]]\ntag = "gas1.ch4"\nhigh = 1.0\n[[alarms]]\ntag = "gas1.ch4"\nlow = 0.1\n',
     "alarms[1].tag: a second [[alarms]] table for the same tag"),
    ('[[alarms]]\ntag = "gas1.ch4"\nhigh = 1.0\non_delay_s = -1\n', "alarms[0].on_delay_s"),
    ('[[deadbands]]\ntag = "gas1.ch4"\nheartbeat_s = 60\n', "deadbands[0].tag: no deadband set"),
    ('[[deadbands]]\ntag = "gas1ch4"\nabsolute = 1.0\n', "deadbands[0].tag: invalid value (got 'gas1ch4'"),
    ('[[calculated]]\nname = "d"\nop = "difference"\ninputs = ["gas1.ch4"]\n',
     "calculated[0].inputs: difference takes 2 inputs (got 1; allowed: 2)"),
    ('[[calculated]]\nname = "d"\nop = "sum"\ninputs = ["gas1.ch4", "gas2.ch4"]\n',
     "calculated[0].inputs[1]: no such tag (got 'gas2.ch4'"),
    ('[[calculated]]\nname = "d"\nop = "eval"\ninputs = ["gas1.ch4"]\n', "calculated[0].op"),
])
def test_bad_rule_is_refused_with_its_key(fragment: str, expected: str) -> None:
    """The configuration is refused and the message points at the offending key."""
    with pytest.raises(ConfigError) as caught:
        parse_config(BASE + fragment, "agent.toml")

    assert expected in str(caught.value)


def test_rules_may_refer_to_calculated_tags() -> None:
    """An alarm and a deadband on 'calc.<name>' are accepted when that calculated tag is declared."""
    config = parse_config(BASE + """
[[calculated]]
name = "flow-m3h"
op = "scale"
inputs = ["gas1.flow"]
factor = 3.6
[[alarms]]
tag = "calc.flow-m3h"
high = 500.0
[[deadbands]]
tag = "calc.flow-m3h"
percent = 2.0
""", "agent.toml")

    assert ([a.tag for a in config.alarms], [d.tag for d in config.deadbands]) == (["calc.flow-m3h"], ["calc.flow-m3h"])


def test_pipeline_from_config_applies_every_section() -> None:
    """The pipeline built from a loaded file computes the calculated tag and raises its alarm."""
    config = parse_config(BASE + """
[[calculated]]
name = "flow-m3h"
op = "scale"
inputs = ["gas1.flow"]
factor = 3.6
[[alarms]]
tag = "calc.flow-m3h"
high = 500.0
""", "agent.toml")
    clock = FakeClock()
    pipeline = Pipeline.from_config(config, clock=clock)
    now = int(clock.time() * 1000)

    pipeline.ingest([Sample("gas1.flow", now, 150.0)])

    assert [(r[0], r[2], r[3], r[4]) for r in pipeline.take_alarms().alarm] == [
        ("calc.flow-m3h", "high", "reset", None), ("calc.flow-m3h", "high", "raised", 540.0)]


def test_a_reload_that_removes_a_rule_resets_its_alarms() -> None:
    """An alarm the gateway stops watching is reset: a receiver must not keep it raised for ever."""
    two = '[[alarms]]\ntag = "gas1.ch4"\nhigh = 1.0\n[[alarms]]\ntag = "gas1.flow"\nhigh = 10.0\nlow = 1.0\n'
    one = '[[alarms]]\ntag = "gas1.ch4"\nhigh = 1.0\n'
    clock = FakeClock()
    before = Pipeline.from_config(parse_config(BASE + two), clock=clock)
    assert sorted((r[0], r[2], r[3]) for r in before.take_alarms().alarm) == [
        ("gas1.ch4", "high", "reset"), ("gas1.flow", "high", "reset"), ("gas1.flow", "low", "reset")]

    after = Pipeline.from_config(parse_config(BASE + one), clock=clock, previous=before)

    assert sorted((r[0], r[2], r[3], r[5]) for r in after.take_alarms().alarm) == [
        ("gas1.flow", "high", "reset", 10.0), ("gas1.flow", "low", "reset", 1.0)]


def test_reload_keeps_the_state_of_unchanged_alarm_rules() -> None:
    """After a reload an active alarm whose rule did not change is not raised again; a changed rule starts afresh."""
    rules = '[[alarms]]\ntag = "gas1.ch4"\nhigh = 1.0\n[[alarms]]\ntag = "gas1.flow"\nhigh = {flow_high}\n'
    clock = FakeClock()
    now = int(clock.time() * 1000)
    before = Pipeline.from_config(parse_config(BASE + rules.format(flow_high=10.0)), clock=clock)
    before.ingest([Sample("gas1.ch4", now, 1.2), Sample("gas1.flow", now, 12.0)])
    before.take_alarms()

    after = Pipeline.from_config(parse_config(BASE + rules.format(flow_high=11.0)), clock=clock, previous=before)
    after.ingest([Sample("gas1.ch4", now + 1000, 1.3), Sample("gas1.flow", now + 1000, 12.5)])

    # The unchanged rule keeps its state (no row); the changed one is reset, then raised afresh.
    assert [(r[0], r[3]) for r in after.take_alarms().alarm] == [("gas1.flow", "reset"), ("gas1.flow", "raised")]
