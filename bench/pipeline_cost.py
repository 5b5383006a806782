"""Pipeline cost per sample at 10,000 tags: aggregation alone, then with deadbands, alarm rules and both.

Run: python3 bench/pipeline_cost.py [--tags N] [--seconds S] [--repeat R]

Feeds ``tags`` tags (100 devices of ``tags/100``), one sample per tag per simulated second, in bursts of one
device poll, for ``seconds`` simulated seconds on a FakeClock, collecting (closing windows) once a simulated
second as the runtime does. The values are a slow sine per tag with noise, so deadbands let a share of the
samples through and alarm thresholds are crossed now and then. Prints CPU microseconds per sample (the best
of ``repeat`` runs, process time, so a loaded machine inflates it less than wall time) and what that means
for one core at 10,000 samples/s. All variants run in the same process, so their ratios are comparable.

The last variant feeds the same values as the Modbus driver hands them over: one sample block per device
poll (agent.core.sample: the bytes, as float64 here, one timestamp), a burst with a bad sample as plain samples.

Reference (before issue 8, the ten-column window only, same machine): 0.71-0.87 us/sample.
"""

from __future__ import annotations

import argparse
import gc
import math
import random
import struct
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agent.core.clock import FakeClock
from agent.core.sample import BlockLayout, Poll, Quality, Sample, SampleBlock
from agent.pipeline.alarms import TagAlarms
from agent.pipeline.calculated import Calculation
from agent.pipeline.deadband import Deadband
from agent.pipeline.pipeline import Pipeline

T0 = 1_700_000_000_000


def make_bursts(tags: list[str], seconds: int) -> list[list[list[Sample]]]:
    """Per simulated second, one burst per device."""
    rng = random.Random(8)
    per_device = 100
    phases = [rng.random() * 6.28 for _ in tags]
    out = []
    for s in range(seconds):
        ts = T0 + s * 1000
        second = []
        for d in range(0, len(tags), per_device):
            burst = []
            for i in range(d, min(d + per_device, len(tags))):
                value = 50.0 + 40.0 * math.sin(phases[i] + s / 30.0) + rng.gauss(0.0, 0.5)
                quality = Quality.BAD if rng.random() < 0.001 else Quality.GOOD
                burst.append(Sample(tags[i], ts, None if quality else value, quality, "timeout" if quality else None))
            second.append(burst)
        out.append(second)
    return out


def as_polls(bursts: list[list[list[Sample]]]) -> list[list[Poll]]:
    """The bursts as the Modbus driver hands them over: a block per device poll while every value is good."""
    layouts: dict[tuple[str, ...], tuple[BlockLayout, struct.Struct]] = {}
    out = []
    for second in bursts:
        polls = []
        for burst in second:
            poll = Poll()
            if any(s.quality for s in burst):
                poll.extend(burst)
            else:
                names = tuple(s.tag for s in burst)
                if names not in layouts:
                    packer = struct.Struct(f">{len(names)}d")
                    layouts[names] = (BlockLayout(names, packer.unpack_from, [(1.0, 0.0)] * len(names)), packer)
                layout, packer = layouts[names]
                poll.add_block(SampleBlock(layout, burst[0].ts_ms, packer.pack(*(s.value for s in burst))))
            polls.append(poll)
        out.append(polls)
    return out


def run(build: Callable[[FakeClock], Pipeline], bursts: list[list[Any]]) -> tuple[float, Pipeline]:
    clock = FakeClock(start=T0 / 1000)
    pipeline = build(clock)
    gc.collect()
    started = time.process_time()
    for s, second in enumerate(bursts):
        for burst in second:
            pipeline.ingest(burst)
        clock._now = s + 0.5
        pipeline.collect()
    clock._now = len(bursts) + 0.5
    pipeline.collect(final=True)
    return time.process_time() - started, pipeline


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tags", type=int, default=10_000)
    parser.add_argument("--seconds", type=int, default=30)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    import logging

    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))  # figures only
    tags = [f"plc{i // 100}.t{i % 100}" for i in range(args.tags)]
    bursts = make_bursts(tags, args.seconds)
    samples = args.tags * args.seconds

    def deadbands() -> dict[str, Deadband]:
        return {t: Deadband(absolute=1.0, heartbeat_s=60) for t in tags}

    def alarms(clock: FakeClock) -> list[TagAlarms]:
        now = int(clock.time() * 1000)
        return [TagAlarms(t, now_ms=now, high=85.0, high_high=88.0, low=12.0, deadband=0.5, on_delay_s=2,
                          rate_per_s=5.0, stuck_s=600, stuck_band=0.01, bad_quality_s=30) for t in tags]

    calcs = [Calculation(f"sum{d}", "sum", [f"plc{d}.t{i}" for i in range(4)]) for d in range(args.tags // 100)]
    variants: dict[str, Callable[[FakeClock], Pipeline]] = {
        "aggregation only": lambda c: Pipeline(window_s=10, clock=c),
        "+ deadband on every tag (raw by exception)": lambda c: Pipeline(window_s=10, clock=c, deadbands=deadbands()),
        "+ 7 alarm rules on every tag": lambda c: Pipeline(window_s=10, clock=c, alarms=alarms(c)),
        "all: deadband + alarms + 1 sum per device": lambda c: Pipeline(
            window_s=10, clock=c, deadbands=deadbands(), alarms=alarms(c), calculated=calcs),
        "aggregation only, as sample blocks": lambda c: Pipeline(window_s=10, clock=c),
    }
    polls = as_polls(bursts)
    print(f"pipeline cost, {args.tags} tags x {args.seconds} s = {samples} samples per run, best of {args.repeat}")
    base = None
    for name, build in variants.items():
        fed = polls if "blocks" in name else bursts
        best, pipeline = min((run(build, fed) for _ in range(args.repeat)), key=lambda r: r[0])
        per_sample_us = best / samples * 1e6
        base = base or per_sample_us
        core_share = per_sample_us * 10_000 / 1e6 * 100
        print(f"  {name:45s} {per_sample_us:6.2f} us/sample  x{per_sample_us / base:4.2f}  "
              f"{core_share:5.1f}% of one core at 10,000 samples/s  "
              f"(raw rows {pipeline.stats.raw_rows}, alarm events {pipeline.stats.alarm_events})")


if __name__ == "__main__":
    main()
