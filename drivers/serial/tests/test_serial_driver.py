"""The driver against simulated instruments on pseudo-terminals: stream, poll, garbage, unplug/replug."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import tomllib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog

from agent.core.clock import FakeClock
from agent.core.sample import Quality, Sample
from config.schema import AgentConfig
from drivers.serial import SerialDevice, SerialDriver
from drivers.serial.checksum import ChecksumSpec
from drivers.serial.tests.instruments import AnsweringBus, Pty, wait_until

HERE = Path(__file__).parent
DATA = HERE / "data"
EXAMPLES = HERE.parent.parent.parent / "config" / "examples"
LINE = ChecksumSpec("sum8", "hex", separator=b";", cover_from=0)


def example(name: str, **update: Any) -> SerialDevice:
    config = AgentConfig.model_validate(tomllib.loads((EXAMPLES / f"serial-{name}.toml").read_text()))
    device = config.devices[name]
    assert isinstance(device, SerialDevice)
    if "poll" in update:
        update["poll"] = device.poll.model_copy(update=update["poll"])  # type: ignore[union-attr]
    return device.model_copy(update=update)


def methane_line(ch4: float, status: str = "00") -> bytes:
    return LINE.append(f"CH4,{ch4:.2f},%LEL,20.0,C,{status}".encode()) + b"\r\n"


@contextlib.asynccontextmanager
async def running(driver: SerialDriver) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(driver.run(), name=f"test.{driver.name}")
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@pytest.fixture
def pty() -> Iterator[Pty]:
    p = Pty()
    yield p
    p.close()


def as_rows(samples: list[Sample]) -> list[list[object]]:
    return [[s.tag, s.value, int(s.quality), s.reason] for s in samples]


def approx_rows(rows: list[list[object]]) -> list[list[object]]:
    return [[t, pytest.approx(v) if isinstance(v, float) else v, q, r] for t, v, q, r in rows]


@pytest.mark.parametrize("name", ["methane", "weather"])
async def test_recorded_stream_replayed_through_a_pty_gives_the_expected_samples(pty: Pty, name: str) -> None:
    """The example profile decodes its recorded stream, written in random chunks, into exactly the samples
    the instrument sent; the garbage in the recording is skipped and counted."""
    expected = json.loads((DATA / f"serial-{name}.expected.json").read_text())
    samples: list[Sample] = []
    driver = SerialDriver(name, example(name, port=pty.path), samples.extend)

    async with running(driver):
        await wait_until(lambda: driver.stats.connected, "the port to open")
        await pty.write((DATA / f"serial-{name}.bin").read_bytes(), chunks=random.Random(1))
        await wait_until(lambda: len(samples) >= len(expected), f"{len(expected)} samples")

    assert as_rows(samples) == approx_rows(expected)
    assert sum(driver.rejects.values()) >= 3
    assert driver.stats.connected is False


async def test_one_sink_call_per_read_burst(pty: Pty) -> None:
    """Ten lines arriving in one read reach the sink as one list, not ten calls."""
    calls: list[list[Sample]] = []
    driver = SerialDriver("methane", example("methane", port=pty.path), lambda s: calls.append(list(s)))

    async with running(driver):
        await wait_until(lambda: driver.stats.connected, "the port to open")
        await pty.write(b"".join(methane_line(i / 10) for i in range(10)))
        await wait_until(lambda: sum(map(len, calls)) >= 20, "20 samples")

    assert len(calls) < 10
    assert [s.value for call in calls for s in call if s.tag == "methane.ch4"] == [i / 10 for i in range(10)]


async def test_rs485_poll_with_addresses_replays_the_recorded_answers(pty: Pty) -> None:
    """Polling addresses 1 and 2 in turn gives each address's tags from its own answers; noise, a bad CRC,
    a silent monitor, a foreign address and status codes come out as the recorded outcomes."""
    answers: dict[int, list[bytes]] = {1: [], 2: []}
    for line in (DATA / "serial-dust.answers").read_text().splitlines():
        address, _, hex_answer = line.partition(" ")
        answers[int(address)].append(bytes.fromhex(hex_answer))
    expected = json.loads((DATA / "serial-dust.expected.json").read_text())
    crc = ChecksumSpec("crc16-modbus", "binary", byte_order="little", cover_from=2)

    def answer(command: bytes) -> bytes:
        assert crc.check(command), command
        queue = answers[command[3]]
        return queue.pop(0) if queue else b""

    bus = AnsweringBus(pty, command_length=7, answer=answer)
    samples: list[Sample] = []
    device = example("dust", port=pty.path, interval_s=0.05, poll={"timeout_s": 1.0})
    driver = SerialDriver("dust", device, samples.extend)

    async with running(driver), asyncio.TaskGroup() as tg:
        bus_task = tg.create_task(bus.run(), name="test.bus")
        await wait_until(lambda: len(samples) >= len(expected), f"{len(expected)} samples")
        bus_task.cancel()

    assert as_rows(samples[: len(expected)]) == approx_rows(expected)
    assert [c[3] for c in bus.commands[:4]] == [1, 2, 1, 2]
    assert driver.rejects["wrong address"] == 1


async def test_unplugged_adapter_is_reopened_when_it_comes_back(tmp_path: Path) -> None:
    """/tmp/.../ttyUSB0 disappears and reappears pointing at a new pty: the driver gives BAD samples at its
    interval meanwhile, warns once, and reads the new port."""
    link = tmp_path / "ttyUSB0"
    first = Pty()
    link.symlink_to(first.path)
    samples: list[Sample] = []
    device = example("methane", port=str(link), interval_s=0.1, reconnect_max_s=0.2)
    driver = SerialDriver("methane", device, samples.extend)
    second: Pty | None = None

    def count(quality: Quality, prefix: str = "") -> int:
        return sum(1 for s in samples if s.quality is quality and (s.reason or "").startswith(prefix))

    try:
        with structlog.testing.capture_logs() as logs:
            async with running(driver):
                await wait_until(lambda: driver.stats.connected, "the port to open")
                await first.write(methane_line(1.0))
                await wait_until(lambda: count(Quality.GOOD) == 2, "the first line")

                link.unlink()
                first.close()
                await wait_until(
                    lambda: count(Quality.BAD, "port unavailable") >= 6, "BAD samples in the outage"
                )
                assert driver.stats.connected is False

                second = Pty()
                link.symlink_to(second.path)
                await wait_until(lambda: driver.stats.connected, "the port to be reopened")
                await second.write(methane_line(2.0))
                await wait_until(lambda: count(Quality.GOOD) == 4, "a line from the new port")
    finally:
        first.close()
        if second is not None:
            second.close()

    assert [e["event"] for e in logs if e["log_level"] == "warning"] == ["serial_port_unavailable"]
    assert [e["event"] for e in logs if e["event"] == "serial_port_reopened"] == ["serial_port_reopened"]
    assert driver.outages == 1
    assert samples[-1] == Sample("methane.temperature", samples[-1].ts_ms, 20.0)


async def test_silent_instrument_marks_every_tag_bad_at_the_interval(pty: Pty) -> None:
    """An open port with no frames for silence_s yields BAD 'no data' samples for every tag, one warning."""
    samples: list[Sample] = []
    device = example("methane", port=pty.path, silence_s=0.2, interval_s=0.1)
    driver = SerialDriver("methane", device, samples.extend)

    with structlog.testing.capture_logs() as logs:
        async with running(driver):
            await wait_until(lambda: len(samples) >= 6, "three rounds of BAD samples")

    assert {(s.tag, s.quality, s.reason) for s in samples} == {
        ("methane.ch4", Quality.BAD, "no data for 0.2 s"),
        ("methane.temperature", Quality.BAD, "no data for 0.2 s"),
    }
    assert [e["event"] for e in logs if e["log_level"] == "warning"] == ["serial_no_data"]


async def test_missing_port_gives_bad_samples_on_the_interval_clock() -> None:
    """Scenario on a fake clock: a port that does not exist gives one BAD sample per tag every interval_s
    (t = 0, 1, 2, 3 s) whatever the reopen backoff is, and a single warning."""
    clock = FakeClock()
    samples: list[Sample] = []
    device = example("methane", port="/nonexistent/ttyUSB9", interval_s=1.0, reconnect_max_s=2.5)
    driver = SerialDriver("methane", device, samples.extend, clock=clock)

    with structlog.testing.capture_logs() as logs:
        async with running(driver):
            await wait_until(lambda: len(samples) == 2, "the first BAD samples")
            for _ in range(3):
                await clock.advance(1.0)

    t0 = int(clock.time() * 1000) - 3000
    assert sorted({s.ts_ms - t0 for s in samples}) == [0, 1000, 2000, 3000]
    assert len(samples) == 8
    assert all(
        s.quality is Quality.BAD and s.reason.startswith("port unavailable: cannot open") for s in samples
    )
    assert [e["event"] for e in logs if e["log_level"] == "warning"] == ["serial_port_unavailable"]
    assert driver.stats.errors >= 2


async def test_stream_frame_behind_a_corrupted_length_arrives_after_the_frame_gap(pty: Pty) -> None:
    """In stream mode a false start whose length never completes is given up after frame_gap_s, and the
    good frame behind it is delivered instead of waiting for more bytes that may never come."""
    crc = ChecksumSpec("crc16-modbus", "binary", byte_order="little", cover_from=2)
    body = bytes([0x0A, 1, 0]) + b"".join(v.to_bytes(2, "big") for v in (5, 6, 7, 250))
    device = example("dust", port=pty.path, mode="stream", frame_gap_s=0.1)
    device = SerialDevice.model_validate(
        {**device.model_dump(exclude={"poll"}), "tags": [{"name": "pm10", "field": "pm10"}]}
    )
    samples: list[Sample] = []
    driver = SerialDriver("dust", device, samples.extend)

    async with running(driver):
        await wait_until(lambda: driver.stats.connected, "the port to open")
        await pty.write(b"\xaa\x55\x30" + crc.append(b"\xaa\x55" + body))
        await wait_until(lambda: len(samples) == 1, "the frame behind the false start")

    assert [(s.tag, s.value, s.quality) for s in samples] == [("dust.pm10", 7, Quality.GOOD)]
    assert driver.rejects["partial"] == 1


async def test_a_failing_sink_stops_the_driver_instead_of_losing_data_silently(pty: Pty) -> None:
    """An exception from the sink is a bug, not device trouble: run() raises it rather than carrying on."""

    def sink(samples: list[Sample]) -> None:
        raise RuntimeError("pipeline broken")

    driver = SerialDriver("methane", example("methane", port=pty.path), sink)
    task = asyncio.create_task(driver.run(), name="test.methane")
    await wait_until(lambda: driver.stats.connected, "the port to open")
    await pty.write(methane_line(1.0))

    with pytest.raises(ExceptionGroup) as info:
        await asyncio.wait_for(task, 20)
    assert info.group_contains(RuntimeError, match="pipeline broken")


async def test_poll_mode_port_loss_gives_bad_samples_for_every_address() -> None:
    """When the bus adapter disappears between polls, every tag of every address turns BAD with
    'port unavailable' at the poll interval."""
    crc = ChecksumSpec("crc16-modbus", "binary", byte_order="little", cover_from=2)

    def answer(command: bytes) -> bytes:
        body = bytes([0x0A, command[3], 0]) + b"".join(v.to_bytes(2, "big") for v in (1, 2, 3, 200))
        return crc.append(b"\xaa\x55" + body)

    pty = Pty()
    bus = AnsweringBus(pty, command_length=7, answer=answer)
    samples: list[Sample] = []
    device = example("dust", port=pty.path, interval_s=0.1, reconnect_max_s=0.2, poll={"timeout_s": 1.0})
    driver = SerialDriver("dust", device, samples.extend)

    def bad_tags() -> set[str]:
        return {s.tag for s in samples if (s.reason or "").startswith("port unavailable")}

    try:
        async with running(driver), asyncio.TaskGroup() as tg:
            bus_task = tg.create_task(bus.run(), name="test.bus")
            await wait_until(lambda: sum(s.quality is Quality.GOOD for s in samples) >= 8, "two good rounds")
            bus_task.cancel()
            pty.close()
            await wait_until(lambda: len(bad_tags()) == 4, "BAD samples for all tags")
    finally:
        pty.close()

    assert bad_tags() == {"dust.face_pm10", "dust.face_pm25", "dust.face_temp", "dust.return_pm10"}
    assert driver.outages == 1
