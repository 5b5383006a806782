"""Config model, sample and docs, status mapping and request planning: no server needed."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from agent.core.sample import Quality
from config.schema import AgentConfig
from drivers.opcua.browse import tag_name
from drivers.opcua.config import OpcUaDevice, OpcUaTag
from drivers.opcua.plan import FALLBACK_LIMIT, chunks, effective_limit
from drivers.opcua.status import overflowed, quality_of, status_name

HERE = Path(__file__).resolve().parent.parent
ROOT = HERE.parent.parent
SAMPLE = (HERE / "sample.toml").read_text()


def device(**overrides: Any) -> dict[str, Any]:
    return {
        "protocol": "opcua",
        "url": "opc.tcp://10.0.0.5:4840",
        "tags": [{"name": "t", "node": "i=2258"}],
    } | overrides


def error_of(data: dict[str, Any]) -> str:
    with pytest.raises(ValidationError) as info:
        OpcUaDevice.model_validate(data)
    return str(info.value)


def test_readme_contains_the_sample_verbatim() -> None:
    """The README shows sample.toml exactly, so the two cannot drift."""
    assert SAMPLE in (HERE / "README.md").read_text()


def test_example_contains_the_sample_and_loads_as_agent_config() -> None:
    """config/examples/opcua-hoist.toml holds the sample verbatim and validates as a whole agent config."""
    text = (ROOT / "config" / "examples" / "opcua-hoist.toml").read_text()

    config = AgentConfig.model_validate(tomllib.loads(text))
    assert SAMPLE in text
    assert isinstance(config.devices["hoist"], OpcUaDevice)


def test_commented_defaults_in_sample_are_the_real_defaults() -> None:
    """Every optional key the sample shows commented out carries the model's actual default."""
    models = {"devices.hoist": OpcUaDevice, "devices.hoist.tags": OpcUaTag}
    section, checked = "", 0
    for line in SAMPLE.splitlines():
        if header := re.match(r"^\[\[?([\w.]+)\]\]?$", line):
            section = header.group(1)
        elif (option := re.match(r"^# (\w+) = (.+)$", line)) and section in models:
            key, shown = option.group(1), tomllib.loads(f"v = {option.group(2)}")["v"]
            default = models[section].model_fields[key].default
            # Tag intervals default to None, "the device's", and the sample shows the device default.
            expected = (
                OpcUaDevice.model_fields["publishing_interval_s"].default if default is None else default
            )
            assert (key, shown) == (key, expected)
            checked += 1
        elif (option := re.match(r"^# (\w+) = (.+)$", line)) and section == "devices.hoist.security":
            assert (
                str(OpcUaDevice.model_fields["security"].default.pki_dir)
                == tomllib.loads(f"v = {option.group(2)}")["v"]
            )
    assert checked >= 15


def test_sample_with_every_option_uncommented_is_valid() -> None:
    """Uncommenting all optional keys of the sample still gives a valid device."""
    text = re.sub(r"(?m)^# (\w+ = )", r"\1", SAMPLE)

    parsed = OpcUaDevice.model_validate(tomllib.loads(text)["devices"]["hoist"])
    assert parsed.tags[0].queue_size == 1


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (device(tags=[{"name": "t", "node": "ns=2;Hoist.Speed"}]), "is not a NodeId"),
        (device(tags=[{"name": "t", "node": "i=1", "path": "Objects/2:A"}]), "exactly one of node"),
        (device(tags=[{"name": "t"}]), "exactly one of node"),
        (device(tags=[{"name": "t", "path": "Objects/2:A:B"}]), "browse path element"),
        (device(tags=[{"name": "t", "node": "i=1", "deadband": "absolute"}]), "needs deadband_value > 0"),
        (
            device(tags=[{"name": "t", "node": "i=1", "deadband": "percent", "deadband_value": 150}]),
            "at most 100",
        ),
        (device(tags=[{"name": "t", "node": "i=1", "mode": "poll", "queue_size": 5}]), "subscribe' only"),
        (device(tags=[{"name": "t", "node": "i=1", "poll_interval_s": 5}]), "poll' only"),
        (device(tags=[{"name": "t", "node": "i=1"}, {"name": "t", "node": "i=2"}]), "used twice"),
        (device(security={"policy": "Basic256Sha256"}), "needs mode"),
        (device(security={"policy": "None", "mode": "Sign"}), "needs a security policy"),
        (device(security={"policy": "Basic128Rsa15", "mode": "Sign"}), "Basic256Sha256"),
        (device(identity={"kind": "username", "username": "op"}), "exactly one of password"),
        (
            device(identity={"kind": "certificate", "cert_file": "u.der", "key_file": "u.key"}),
            "must end in .pem",
        ),
        (device(identity={"kind": "anonymous", "username": "op"}), "with kind 'username' only"),
        (device(url="http://10.0.0.5:4840"), "opc"),
        (
            device(
                client_queue_size=1000,
                tags=[{"name": f"t{i}", "node": "i=1", "queue_size": 600} for i in range(2)],
            ),
            "smaller than one publish burst",
        ),
        (device(colour="red"), "Extra inputs are not permitted"),
    ],
)
def test_bad_config_is_refused_with_a_message_naming_the_fix(data: dict[str, Any], message: str) -> None:
    """Each kind of mistake is refused at load time with a message that says what to write instead."""
    assert message in error_of(data)


def test_password_is_not_shown_in_the_model_repr() -> None:
    """A password given inline never appears when the config is printed or logged."""
    cfg = OpcUaDevice.model_validate(
        device(identity={"kind": "username", "username": "op", "password": "hunter22"})
    )

    assert "hunter22" not in repr(cfg)


@pytest.mark.parametrize(
    ("code", "quality", "name"),
    [
        (0x00000000, Quality.GOOD, "Good"),
        (0x00000480, Quality.GOOD, "Good"),
        (0x408F0000, Quality.UNCERTAIN, "UncertainNoCommunicationLastUsableValue"),
        (0x80340000, Quality.BAD, "BadNodeIdUnknown"),
        (0x80320000, Quality.BAD, "BadWaitingForInitialData"),
        (0xC1230000, Quality.BAD, "0xC1230000"),
    ],
)
def test_status_code_maps_to_quality_and_name(code: int, quality: Quality, name: str) -> None:
    """Severity bits give the quality; the name ignores the info bits and falls back to hex."""
    assert (quality, name) == (quality_of(code), status_name(code))


def test_overflow_bit_is_recognised_only_with_the_datavalue_info_type() -> None:
    """Overflow is InfoType DataValue (0x400) plus bit 0x80; 0x80 alone means something else."""
    assert [overflowed(0x480), overflowed(0x80), overflowed(0)] == [True, False, False]


@pytest.mark.parametrize(
    ("server", "configured", "expected"),
    [(0, 0, FALLBACK_LIMIT), (100, 0, 100), (0, 50, 50), (100, 50, 50), (40, 50, 40)],
)
def test_effective_limit_is_the_smallest_stated(server: int, configured: int, expected: int) -> None:
    """The batch size is the smaller stated limit; zero means not stated; none stated gives the fallback."""
    assert expected == effective_limit(server, configured)


def test_chunks_cover_every_item_in_order_within_the_size() -> None:
    """Splitting 10 items by 4 gives 4, 4, 2 in the original order."""
    parts = [list(p) for p in chunks(list(range(10)), 4)]

    assert parts == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]


def test_tag_names_from_browse_names_are_valid_and_unique() -> None:
    """Browse names with spaces, dots or leading digits become valid, distinct tag names."""
    used: set[str] = set()

    names = [tag_name("Motor Speed", used), tag_name("1st", used), tag_name("Motor.Speed", used)]
    assert names == ["Motor_Speed", "t_1st", "Motor_Speed_2"]


def test_loading_the_schema_does_not_import_asyncua() -> None:
    """A gateway without OPC UA devices never pays for asyncua: the schema and package import without it."""
    code = "import sys, config.schema, drivers.opcua, drivers.opcua.commands; print('asyncua' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)

    assert out.stdout.strip() == "False"
