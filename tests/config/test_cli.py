"""``mine-agent validate`` and ``mine-agent config schema`` as a technician runs them."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from agent.cli import main
from agent.cli.config import schema_text

EXAMPLE = Path(__file__).parent.parent.parent / "config" / "examples" / "gateway.toml"


@pytest.fixture
def broken(tmp_path: Path) -> Path:
    path = tmp_path / "broken.toml"
    path.write_text(EXAMPLE.read_text().replace("# port = 502", "port = 70000"))
    return path


def test_valid_file_prints_ok_with_counts(capsys: pytest.CaptureFixture[str]) -> None:
    """A valid file prints 'FILE: ok (N devices, M tags)' and exits 0."""
    status = main(["validate", str(EXAMPLE)])

    assert (status, capsys.readouterr().out) == (0, f"{EXAMPLE}: ok (1 device, 3 tags)\n")


def test_broker_mode_is_valid_and_its_cost_is_said(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A file choosing ack_mode = "broker" is valid; validate says what that mode loses."""
    path = tmp_path / "broker-mode.toml"
    path.write_text(EXAMPLE.read_text().replace('# ack_mode = "backend"', 'ack_mode = "broker"'))

    status = main(["validate", str(path)])

    lines = capsys.readouterr().out.splitlines()
    assert (status, lines[0]) == (0, f"{path}: ok (1 device, 3 tags)")
    assert lines[1].startswith(f"{path}: note: mqtt.ack_mode = \"broker\"")
    assert "lost for good" in lines[1]


def test_invalid_file_prints_every_problem_and_exits_1(
    broken: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An invalid file prints one line per problem on stdout and exits 1."""
    status = main(["validate", str(broken)])

    out = capsys.readouterr().out
    assert (status, out) == (
        1,
        f"{broken}:65: devices.hoist-plc.port: out of range (got 70000; allowed: 1-65535)\n",
    )


def test_unreadable_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A file that cannot be read exits 2, and 2 wins over 1 when several files are checked."""
    status = main(["validate", str(EXAMPLE), str(tmp_path / "absent.toml")])

    assert status == 2
    assert "absent.toml: cannot read the file" in capsys.readouterr().err


def test_quiet_prints_nothing_for_valid_files(broken: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--quiet prints only problems: nothing for the valid file, the problem for the broken one."""
    status = main(["validate", "--quiet", str(EXAMPLE), str(broken)])

    out = capsys.readouterr().out
    assert status == 1
    assert str(EXAMPLE) not in out
    assert out.count("\n") == 1


def test_schema_is_printed(capsys: pytest.CaptureFixture[str]) -> None:
    """'config schema' prints the JSON Schema to stdout."""
    status = main(["config", "schema"])

    out = capsys.readouterr().out
    assert (status, out) == (0, schema_text())
    assert json.loads(out)["title"] == "mine-agent configuration"


def test_schema_is_written_to_output(tmp_path: Path) -> None:
    """'config schema --output PATH' writes the same text to PATH."""
    target = tmp_path / "schema.json"

    status = main(["config", "schema", "--output", str(target)])

    assert (status, target.read_text()) == (0, schema_text())


def _on(tmp_path: Path, buffer_lines: str) -> Path:
    """The example with its state directory under ``tmp_path`` and the given [buffer] keys."""
    text = EXAMPLE.read_text().replace('# state_dir = "/var/lib/mine-agent"', f'state_dir = "{tmp_path / "state"}"')
    text = text.replace('max_bytes = "2 GiB"', buffer_lines)
    path = tmp_path / "gateway.toml"
    path.write_text(text)
    return path


def test_a_watermark_larger_than_the_file_system_is_flagged(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """min_free_bytes beyond what the state directory's file system can leave free: a warning naming the key
    and the file system's size, and the value the agent will use instead; the file is still valid."""
    total = os.statvfs(tmp_path).f_blocks * os.statvfs(tmp_path).f_frsize
    path = _on(tmp_path, f'max_bytes = "2 GiB"\nmin_free_bytes = {total * 4}')

    status = main(["validate", str(path)])

    out = capsys.readouterr().out
    assert status == 0
    warning = next(line for line in out.splitlines() if "buffer.min_free_bytes" in line)
    assert warning.startswith(f"{path}: warning: buffer.min_free_bytes")
    assert "file system" in warning
    assert "clamp" in warning


def test_limits_that_fit_give_no_warning(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status = main(["validate", str(_on(tmp_path, 'max_bytes = "2 MiB"\nmin_free_bytes = "1 MiB"'))])

    assert (status, "warning" in capsys.readouterr().out) == (0, False)
