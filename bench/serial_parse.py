"""Serial parsing throughput and recovery from corruption (prints figures; asserts nothing).

    python3 bench/serial_parse.py [--frames N]

1. Frames parsed per CPU-second (``time.process_time``), whole pure path: framer + checksum + decoder + tag
   mapping to ``Sample``s, fed in 4 KiB chunks as the driver's reader delivers them:
   * ASCII: methane lines (sum8 hex checksum, regex) and NMEA sentences (xor8, two regex patterns);
   * binary: dust frames (length field, CRC-16/MODBUS, struct).
2. End to end through a pseudo-terminal: the real ``SerialDriver`` reading a free-running ASCII stream with
   ``loop.add_reader`` (writer and driver share one process, so the CPU figure includes the writer).
3. Recovery, two ways of spoiling 10% of the stream: every byte replaced by a random byte with probability
   10%, or random bursts of 1-32 bytes inserted until they make up 10% of the stream. Printed: the share
   of all frames recovered, the share of the *intact* frames (no byte of theirs hit) recovered, and the
   corrupted frames wrongly accepted (a checksum collision: ~1/256 for 8-bit checksums, ~1/65536 for
   CRC-16). With a start marker every intact frame must come back; plain lines without one also lose an
   intact line whose preceding line break was hit, because the two lines merge.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import sys
import time
import timeit
import tomllib
from collections import Counter
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agent.core.sample import Sample
from config.schema import AgentConfig
from drivers.serial import SerialDevice, SerialDriver
from drivers.serial.decoding import DecodeError
from drivers.serial.samples import TagMapper

ROOT = Path(__file__).resolve().parents[1]
CHUNK = 4096


def profile(name: str) -> SerialDevice:
    config = AgentConfig.model_validate(
        tomllib.loads((ROOT / f"config/examples/serial-{name}.toml").read_text())
    )
    device = config.devices[name]
    assert isinstance(device, SerialDevice)
    return device


def methane_frames(rng: random.Random, n: int) -> list[bytes]:
    cs = profile("methane").checksum_spec()
    assert cs is not None
    return [
        cs.append(f"CH4,{rng.uniform(0, 5):.2f},%LEL,{rng.uniform(15, 30):.1f},C,00".encode()) + b"\r\n"
        for _ in range(n)
    ]


def weather_frames(rng: random.Random, n: int) -> list[bytes]:
    cs = profile("weather").checksum_spec()
    assert cs is not None
    out = []
    for i in range(n):
        if i % 2:
            text = f"$WIMWV,{rng.uniform(0, 359):.1f},R,{rng.uniform(0, 12):.1f},M,A"
        else:
            temp, bar = rng.uniform(-5, 30), rng.uniform(0.98, 1.04)
            text = f"$WIXDR,C,{temp:.1f},C,TEMP,P,{bar:.4f},B,BARO,H,50.0,P,RH"
        out.append(cs.append(text.encode()) + b"\r\n")
    return out


def dust_frames(rng: random.Random, n: int) -> list[bytes]:
    cs = profile("dust").checksum_spec()
    assert cs is not None
    out = []
    for _ in range(n):
        address = rng.choice([1, 2])
        values = [rng.randint(0, 500) for _ in range(3)] + [rng.randint(-100, 400)]
        body = bytes([0x0A, address, 0]) + b"".join(v.to_bytes(2, "big", signed=True) for v in values)
        out.append(cs.append(b"\xaa\x55" + body))
    return out


def parse_all(device: SerialDevice, name: str, data: bytes) -> tuple[list[bytes], int, Counter[str]]:
    """Feed ``data`` in chunks through framer, decoder and mapper; return bodies, sample count, rejects."""
    counts: Counter[str] = Counter()
    framer = device.framer(counts)
    decode = device.decoder().decode
    mapper = TagMapper(name, device.tags)
    bodies: list[bytes] = []
    samples = 0
    for at in range(0, len(data), CHUNK):
        for body in framer.feed(data[at : at + CHUNK]):
            try:
                fields = decode(body)
            except DecodeError as exc:
                counts[exc.reason] += 1
                continue
            bodies.append(body)
            samples += len(mapper.samples(fields, 0))
    for body in framer.expire():
        bodies.append(body)
    return bodies, samples, counts


def throughput(label: str, device: SerialDevice, name: str, frames: list[bytes]) -> None:
    data = b"".join(frames)
    best = 0.0
    for _ in range(3):
        t0 = time.process_time()
        bodies, samples, _ = parse_all(device, name, data)
        cpu = time.process_time() - t0
        assert len(bodies) == len(frames), (len(bodies), len(frames))
        best = max(best, len(frames) / cpu)
    print(
        f"  {label:<44} {best:>11,.0f} frames/CPU-s  ({best * samples / len(frames):>11,.0f} samples/CPU-s)"
    )


def corrupt(data: bytes, rate: float, rng: random.Random) -> tuple[bytes, set[int]]:
    out = bytearray(data)
    hit: set[int] = set()
    for i in range(len(out)):
        if rng.random() < rate:
            new = rng.randrange(256)
            if new != out[i]:
                out[i] = new
                hit.add(i)
    return bytes(out), hit


def insert_bursts(data: bytes, rate: float, rng: random.Random) -> tuple[bytes, set[int]]:
    """Insert bursts of 1-32 random bytes at random places until they make up ``rate`` of the result.

    Returns the new stream and the set of original offsets *before which* a burst was inserted.
    """
    budget = int(len(data) * rate / (1 - rate))
    cuts: dict[int, bytes] = {}
    while budget > 0:
        size = min(budget, rng.randint(1, 32))
        cuts[rng.randrange(len(data))] = rng.randbytes(size)
        budget -= size
    out = bytearray()
    last = 0
    for at in sorted(cuts):
        out += data[last:at] + cuts[at]
        last = at
    out += data[last:]
    return bytes(out), set(cuts)


def recovery(
    label: str,
    device: SerialDevice,
    name: str,
    frames: list[bytes],
    body_of: Callable[[bytes], bytes],
    rng: random.Random,
    *,
    mode: str,
) -> None:
    data = b"".join(frames)
    if mode == "replace":
        damaged, hit = corrupt(data, 0.10, rng)
    else:
        damaged, before = insert_bursts(data, 0.10, rng)
        hit = {i for i in before if i > 0}  # a burst before byte i splits (damages) the frame holding i
        starts = set()
        at = 0
        for f in frames:
            starts.add(at)
            at += len(f)
        hit -= starts  # a burst exactly between two frames damages neither
    intact: list[bytes] = []
    at = 0
    for f in frames:
        if not any(i in hit for i in range(at, at + len(f))):
            intact.append(body_of(f))
        at += len(f)
    bodies, _, counts = parse_all(device, name, damaged)
    got = Counter(bodies)
    sent = Counter(body_of(f) for f in frames)
    intact_found = sum((Counter(intact) & got).values())
    false_accepts = sum((got - sent).values())
    recovered = sum((got & sent).values())
    print(
        f"  {label:<12} recovered {recovered / len(frames):6.1%} of all frames, "
        f"{intact_found / len(intact):6.1%} of the {len(intact) / len(frames):.1%} left intact; "
        f"wrongly accepted: {false_accepts}; top rejects: {dict(counts.most_common(3))}"
    )


async def pty_stream(frames: list[bytes]) -> tuple[float, float]:
    """Lines per wall-second and per CPU-second through a pty and the real driver."""
    master, slave = os.openpty()
    os.set_blocking(master, False)
    device = profile("methane").model_copy(update={"port": os.ttyname(slave)})
    received = 0
    done = asyncio.Event()
    wanted = len(frames) * 2

    def sink(samples: list[Sample]) -> None:
        nonlocal received
        received += len(samples)
        if received >= wanted:
            done.set()

    driver = SerialDriver("methane", device, sink)
    task = asyncio.create_task(driver.run(), name="bench.serial")
    while not driver.stats.connected:  # noqa: ASYNC110 - the driver exposes a flag, not an event
        await asyncio.sleep(0.01)
    data = memoryview(b"".join(frames))
    t0, c0 = time.perf_counter(), time.process_time()
    while data:
        with contextlib.suppress(BlockingIOError):
            data = data[os.write(master, data[:CHUNK]) :]
        await asyncio.sleep(0)
    await asyncio.wait_for(done.wait(), 120)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    os.close(master)
    os.close(slave)
    return len(frames) / wall, len(frames) / cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, default=100_000)
    args = parser.parse_args()
    rng = random.Random(42)
    n = args.frames
    methane, weather, dust = profile("methane"), profile("weather"), profile("dust")
    m_frames, w_frames, d_frames = methane_frames(rng, n), weather_frames(rng, n), dust_frames(rng, n)

    runs = timeit.repeat("sum(range(1000))", number=2000, repeat=5, timer=time.process_time)
    calibration = min(runs) / 2000 * 1e6
    print(f"Machine speed: sum(range(1000)) takes {calibration:.1f} µs of CPU (library notes: 13.7 µs)")
    print(f"\nParsing throughput, pure path, {n:,} frames, best of 3 (Python {sys.version.split()[0]}):")
    throughput("ASCII methane lines (sum8 hex, 1 regex)", methane, "methane", m_frames)
    throughput("ASCII NMEA weather (xor8 hex, 2 regexes)", weather, "weather", w_frames)
    throughput("binary dust frames (len field, CRC16, struct)", dust, "dust", d_frames)

    print(
        f"\nEnd to end through a pty and SerialDriver ({n // 2:,} methane lines, add_reader, 4 KiB writes):"
    )
    per_wall, per_cpu = asyncio.run(pty_stream(m_frames[: n // 2]))
    print(f"  {per_wall:,.0f} lines/wall-s, {per_cpu:,.0f} lines/CPU-s (writer included)")

    for mode, title in (
        ("replace", "10% of bytes replaced at random"),
        ("insert", "random bursts of 1-32 bytes inserted, 10% of the stream"),
    ):
        print(f"\nRecovery, {title}:")
        recovery("methane", methane, "methane", m_frames[:20_000], lambda f: f[:-5], rng, mode=mode)
        recovery("NMEA", weather, "weather", w_frames[:20_000], lambda f: f[1:-5], rng, mode=mode)
        recovery("dust binary", dust, "dust", d_frames[:20_000], lambda f: f[2:-2], rng, mode=mode)


if __name__ == "__main__":
    main()
