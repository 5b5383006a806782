"""parse_config / load_config: a valid file becomes an AgentConfig; anything else raises ConfigError listing
every problem, without I/O beyond reading the file and without ever echoing a secret."""

from __future__ import annotations

import builtins
import pathlib
from pathlib import Path
from typing import Any

import pytest

from agent.core.errors import ConfigError, ConfigProblem
from config.loader import load_config, parse_config
from config.schema import AgentConfig

SECRET = "s3cret-Pa55word"

VALID = f"""\
[gateway]
id = "gw1"
key_file = "/nonexistent/gateway.key"

[mqtt]
host = "broker.example.net"
username = "gw-01"
password = "{SECRET}"
archive_keys_file = "/nonexistent/archive.keys"

[devices.plc1]
protocol = "modbus-tcp"
host = "127.0.0.1"

[[devices.plc1.tags]]
name = "level"
address = 0
"""


def test_valid_text_becomes_config_with_defaults() -> None:
    """A minimal valid file loads, and keys it leaves out take their documented defaults."""
    config = parse_config(VALID)

    assert isinstance(config, AgentConfig)
    assert (config.mqtt.port, config.buffer.sync, config.buffer_path) == (
        1883,
        "full",
        Path("/var/lib/mine-agent/buffer.sqlite"),
    )
    assert config.mqtt.ack_mode == "backend"


def test_backend_mode_without_archive_keys_explains_both_choices() -> None:
    """The default ack mode needs archive_keys_file; the problem names the key, where its line comes from, and
    what choosing broker mode instead costs."""
    with pytest.raises(ConfigError) as caught:
        parse_config(VALID.replace('archive_keys_file = "/nonexistent/archive.keys"\n', ""))

    (problem,) = caught.value.problems
    assert problem.key == "mqtt.archive_keys_file"
    assert "mine-backend keys archive-public" in problem.message
    assert 'ack_mode = "broker"' in problem.message
    assert "loses them" in problem.message


def test_broker_mode_needs_no_archive_keys() -> None:
    """ack_mode = "broker" loads without archive_keys_file."""
    text = VALID.replace('archive_keys_file = "/nonexistent/archive.keys"', 'ack_mode = "broker"')

    assert parse_config(text).mqtt.archive_keys_file is None


def test_problems_name_the_given_path() -> None:
    """Messages start with the name passed as ``path`` (a file, or e.g. a remote push id)."""
    with pytest.raises(ConfigError) as caught:
        parse_config(VALID.replace("1", "x", 0).replace('host = "127.0.0.1"', "host = 1"), "push-42")

    assert str(caught.value).startswith("push-42:")


def test_default_path_name_is_config_placeholder() -> None:
    """Without a path, messages name the text ``<config>``."""
    with pytest.raises(ConfigError) as caught:
        parse_config("")

    assert caught.value.problems[0] == ConfigProblem("<config>", None, "", "missing required table [gateway]")


def test_every_problem_is_reported_with_its_line_and_key() -> None:
    """Several independent mistakes are all reported at once, each as a structured ConfigProblem."""
    text = VALID.replace('id = "gw1"', 'id = "gw 1"').replace("address = 0", "address = -5")

    with pytest.raises(ConfigError) as caught:
        parse_config(text, "gw.toml")

    assert [(p.line, p.key) for p in caught.value.problems] == [
        (2, "gateway.id"),
        (17, "devices.plc1.tags[0].address"),
    ]


def test_error_carries_no_pydantic_cause() -> None:
    """ConfigError is not chained to pydantic's ValidationError, whose text would echo input values."""
    with pytest.raises(ConfigError) as caught:
        parse_config(VALID.replace("[gateway]", "[gateway]\npassword_hint = 1"))

    assert (caught.value.__cause__, caught.value.__context__) == (None, None)


def test_secret_is_not_echoed_in_problems() -> None:
    """When the section holding a password has errors, the password appears in no message."""
    text = VALID.replace('host = "broker.example.net"', 'host = ""\nport = 0\npassword_file = "/p"')

    with pytest.raises(ConfigError) as caught:
        parse_config(text)

    assert len(caught.value.problems) == 2
    assert SECRET not in str(caught.value) + repr(caught.value.problems)


def test_secret_is_not_rendered_by_a_loaded_config() -> None:
    """repr, str and JSON of a loaded config show no password (so logging a config cannot leak it)."""
    config = parse_config(VALID)

    rendered = repr(config) + str(config) + config.model_dump_json() + repr(config.mqtt)

    assert SECRET not in rendered
    assert config.mqtt.password is not None
    assert config.mqtt.password.get_secret_value() == SECRET


def test_parse_does_no_file_access(monkeypatch: pytest.MonkeyPatch) -> None:
    """parse_config touches no file: key files need not exist and nothing is opened or stat'ed."""

    def forbidden(*_args: Any, **_kwargs: Any) -> Any:
        raise AssertionError("parse_config did I/O")

    monkeypatch.setattr(builtins, "open", forbidden)
    monkeypatch.setattr(pathlib.Path, "stat", forbidden)
    monkeypatch.setattr(pathlib.Path, "open", forbidden)

    config = parse_config(VALID)

    assert config.gateway.key_file == Path("/nonexistent/gateway.key")


def test_types_are_not_coerced() -> None:
    """A float where an integer belongs is an error, not silently truncated."""
    with pytest.raises(ConfigError) as caught:
        parse_config(VALID.replace("address = 0", "address = 1.0"))

    assert "wrong type (got 1.0, a float; allowed: an integer, 0-65535)" in str(caught.value)


def test_load_reads_the_file(tmp_path: Path) -> None:
    """load_config reads the file and names it in messages."""
    path = tmp_path / "gw.toml"
    path.write_text(VALID.replace("1883", "x").replace('protocol = "modbus-tcp"', 'protocol = "opc"'))

    with pytest.raises(ConfigError) as caught:
        load_config(path)

    assert str(caught.value).startswith(f"{path}:12: devices.plc1.protocol: unknown protocol (got 'opc'")


def test_unreadable_file_is_a_config_error(tmp_path: Path) -> None:
    """A missing file raises ConfigError naming the file, like an invalid one."""
    path = tmp_path / "missing.toml"

    with pytest.raises(ConfigError) as caught:
        load_config(path)

    assert [str(p) for p in caught.value.problems] == [
        f"{path}: cannot read the file: No such file or directory"
    ]


def test_non_utf8_file_is_a_config_error(tmp_path: Path) -> None:
    """A file that is not UTF-8 text (saved as Latin-1) is reported, not a crash."""
    path = tmp_path / "latin1.toml"
    path.write_bytes('[gateway]\nid = "Pozo Señal"\n'.encode("latin-1"))

    with pytest.raises(ConfigError) as caught:
        load_config(path)

    assert "not a UTF-8 text file" in str(caught.value)


def test_password_is_read_from_its_file_on_demand(tmp_path: Path) -> None:
    """read_password returns the first line of password_file, read when asked, not at load."""
    secret_file = tmp_path / "mqtt-password"
    text = VALID.replace(f'password = "{SECRET}"', f'password_file = "{secret_file}"')
    config = parse_config(text)  # the file does not exist yet: loading does not read it
    secret_file.write_text(f"{SECRET}\nignored\n")

    password = config.mqtt.read_password()

    assert password is not None
    assert password.get_secret_value() == SECRET


def test_unreadable_password_file_names_the_key(tmp_path: Path) -> None:
    """A password_file that cannot be read raises ConfigError naming mqtt.password_file."""
    config = parse_config(VALID.replace(f'password = "{SECRET}"', f'password_file = "{tmp_path / "nope"}"'))

    with pytest.raises(ConfigError) as caught:
        config.mqtt.read_password()

    assert caught.value.problems[0].key == "mqtt.password_file"


def test_byte_order_mark_is_accepted(tmp_path: Path) -> None:
    """A file saved by a Windows editor with a UTF-8 byte order mark loads like one without."""
    path = tmp_path / "bom.toml"
    path.write_bytes(b"\xef\xbb\xbf" + VALID.encode())

    assert load_config(path) == parse_config(VALID)
