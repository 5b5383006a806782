"""``mine-agent serial sniff``: raw bytes in hex and ASCII, and what the profile decodes from them."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

from drivers.serial.checksum import ChecksumSpec
from drivers.serial.commands import hexdump
from drivers.serial.tests.instruments import AnsweringBus, Pty

ROOT = Path(__file__).parents[3]
WEATHER = ROOT / "config" / "examples" / "serial-weather.toml"


def test_hexdump_shows_sixteen_bytes_a_row_with_printable_ascii() -> None:
    """Each row has the hex bytes, padded, and the ASCII with '.' for control bytes."""
    rows = hexdump(b"$WIMWV,1*2B\r\n\x00\xffABCDE")

    assert rows == [
        "24 57 49 4d 57 56 2c 31 2a 32 42 0d 0a 00 ff 41  |$WIMWV,1*2B....A|",
        "42 43 44 45                                      |BCDE|",
    ]


async def sniff(pty: Pty, payload: bytes, *extra: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "agent.cli",
        "serial",
        "sniff",
        pty.path,
        *extra,
        "--duration",
        "30",
        "--frames",
        "3",
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    assert proc.stdout is not None
    banner = await asyncio.wait_for(proc.stdout.readline(), 30)
    assert banner.startswith(b"sniffing "), banner
    await pty.write(payload)
    out, _ = await asyncio.wait_for(proc.communicate(), 30)
    return banner.decode() + out.decode()


async def test_sniff_with_profile_prints_frames_skips_and_decoded_values() -> None:
    """With --config, each frame is shown in hex with its tag values, and garbage with its reason."""
    pty = Pty()
    try:
        data = (ROOT / "drivers/serial/tests/data/serial-weather.bin").read_bytes()
        out = await sniff(
            pty, b"\x00\x01noise\r\n" + data[:200], "--config", str(WEATHER), "--device", "weather"
        )
    finally:
        pty.close()

    assert "decoding as device 'weather'" in out
    assert "skipped: noise, 9 bytes" in out
    assert "24 57 49 4d 57 56 2c 32 31 31 2e 30 2c 52 2c 39  |$WIMWV,211.0,R,9|" in out
    assert "weather.wind_direction = 211 °" in out
    assert "weather.pressure = 998.2 hPa" in out


async def test_sniff_without_profile_prints_raw_chunks() -> None:
    """Without a profile, whatever arrives is dumped in hex and ASCII."""
    pty = Pty()
    try:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "agent.cli",
            "serial",
            "sniff",
            pty.path,
            "--baud",
            "4800",
            "--duration",
            "30",
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        assert proc.stdout is not None
        assert (await asyncio.wait_for(proc.stdout.readline(), 30)).startswith(b"sniffing")
        await pty.write(b"HELLO\r\n")
        lines: list[bytes] = []

        async def read_lines() -> None:
            while b"|HELLO..|" not in b"".join(lines):
                lines.append(await proc.stdout.readline())  # type: ignore[union-attr]

        await asyncio.wait_for(read_lines(), 30)
        proc.terminate()
        await proc.wait()
    finally:
        pty.close()

    assert b"48 45 4c 4c 4f 0d 0a" in b"".join(lines)


def test_sniff_reports_a_missing_port_clearly(tmp_path: Path) -> None:
    """A port that does not exist gives exit code 1 and a message naming it, not a traceback."""
    result = subprocess.run(
        [sys.executable, "-m", "agent.cli", "serial", "sniff", str(tmp_path / "ttyUSB7")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 1
    assert f"cannot open {tmp_path / 'ttyUSB7'}" in result.stderr
    assert "Traceback" not in result.stderr


def test_sniff_reports_an_invalid_profile_with_its_key(tmp_path: Path) -> None:
    """A profile with a regex lacking a tag's group is refused with the device key path and the reason."""
    bad = tmp_path / "bad.toml"
    bad.write_text(WEATHER.read_text().replace("(?P<rh>", "(?P<humid>"))
    result = subprocess.run(
        [sys.executable, "-m", "agent.cli", "serial", "sniff", "/dev/null", "--config", str(bad)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 1
    assert "devices.weather" in result.stderr
    assert "field 'rh' is not decoded" in result.stderr


async def test_sniff_poll_sends_commands_and_decodes_the_answers() -> None:
    """With --poll, sniff sends the profile's command to each address and decodes the answers."""
    crc = ChecksumSpec("crc16-modbus", "binary", byte_order="little", cover_from=2)

    def answer(command: bytes) -> bytes:
        body = bytes([0x0A, command[3], 0]) + b"".join(v.to_bytes(2, "big") for v in (11, 22, 33, 215))
        return crc.append(b"\xaa\x55" + body)

    pty = Pty()
    bus = AnsweringBus(pty, command_length=7, answer=answer)
    try:
        async with asyncio.TaskGroup() as tg:
            bus_task = tg.create_task(bus.run(), name="test.bus")
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "agent.cli", "serial", "sniff", pty.path, "--config",
                str(ROOT / "config/examples/serial-dust.toml"), "--poll", "--frames", "2", "--duration", "30",
                cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            )  # fmt: skip
            out, _ = await asyncio.wait_for(proc.communicate(), 60)
            bus_task.cancel()
    finally:
        pty.close()

    text = out.decode()
    assert "tx address 1: aa 55 02 01 01 10 50" in text
    assert "dust.face_pm10 = 33 µg/m³" in text
    assert "dust.face_temp = 21.5 °C" in text
    assert "dust.return_pm10 = 33 µg/m³" in text
