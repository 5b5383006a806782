"""The Modbus driver: polls one unit on a schedule and hands each poll's samples to the sink.

Scheduling: tags are grouped by poll interval (the device's ``poll_interval_s`` or a tag's own). Each group
has a fixed monotonic schedule ``t0 + k * interval``. One task polls every group that is due, one request at
a time; a poll therefore never starts while the previous one is running. If a poll overruns (a slow device,
a timeout), the ticks that passed meanwhile are skipped and counted in ``stats.skipped_polls`` instead of
being run late in a burst: tasks never pile up (compare home-assistant/core#127275).

Failures become samples: every tag of every due group gets a sample on every tick, good or bad with a
reason, so the pipeline sees an outage as it happens. One warning is logged when the device starts failing
and one info when it recovers, never one per poll.

A poll is handed to the sink as one ``Poll``: register reads travel as ``SampleBlock``s where the tags allow
it (drivers.modbus.decode), everything else as samples.
"""

from __future__ import annotations

__all__ = ["ModbusDriver"]

import math
from array import array
from dataclasses import dataclass, field, replace
from typing import cast

import structlog

from agent.core.clock import Clock
from agent.core.errors import DriverError
from agent.core.sample import Poll, SampleSink
from drivers import Driver
from drivers.modbus.config import ModbusDevice, ModbusTag
from drivers.modbus.decode import BitBlockDecoder, RegisterBlockDecoder, bad_samples, compile_tag
from drivers.modbus.health import UnitBackoff
from drivers.modbus.link import (
    ExceptionResponseError,
    ModbusLink,
    NoResponseError,
    NotConnectedError,
    ReadError,
    acquire_link,
    release_link,
)
from drivers.modbus.planner import BIT_TABLES, ReadRequest, RegisterPlanner, TagSpan

log = structlog.get_logger(__name__)

ILLEGAL_DATA_ADDRESS = 2


@dataclass(slots=True)
class _PlannedRead:
    """One request of a poll group and its decoder. The request carries no tag spans: the tags it covers
    are kept as indices into the device's tags (4 bytes each) and made into spans again only if the device
    refuses the request and it must be split. Keeping a span and a compiled tag per register instead costs
    about 1.7 MB per 10,000 registers for as long as the agent runs."""

    request: ReadRequest
    tags: array[int]
    decoder: RegisterBlockDecoder | BitBlockDecoder


@dataclass(slots=True)
class _PollGroup:
    interval_s: float
    reads: list[_PlannedRead]
    names: tuple[str, ...]
    next_due: float = 0.0
    polls: int = field(default=0)


class ModbusDriver(Driver):
    """One Modbus unit over TCP, RTU or RTU-over-TCP (``config`` is a :data:`ModbusDevice`)."""

    config: ModbusDevice

    def __init__(
        self, name: str, config: ModbusDevice, sink: SampleSink, *, clock: Clock | None = None
    ) -> None:
        super().__init__(name, config, sink, clock=clock)
        self.planner = RegisterPlanner(
            max_registers=config.max_registers_per_request,
            max_bits=config.max_bits_per_request,
            max_gap_registers=config.max_gap_registers,
            max_gap_bits=config.max_gap_bits,
        )
        self.groups = self._plan_groups(config.tags)
        self.unit_backoff = UnitBackoff(
            failures_before_backoff=config.failures_before_backoff,
            initial_s=min(config.poll_interval_s * 2, config.backoff_max_s),
            maximum_s=config.backoff_max_s,
        )
        self._failing: str | None = None
        self._last_no_response: str = "no response"
        self._failing_since: float = 0.0
        self._log = log.bind(device=name)

    @property
    def requests_per_cycle(self) -> int:
        """How many read requests one poll of every group takes (for health output and benchmarks)."""
        return sum(len(g.reads) for g in self.groups)

    def _plan_groups(self, tags: list[ModbusTag]) -> list[_PollGroup]:
        by_interval: dict[float, list[TagSpan]] = {}
        for i, tag in enumerate(tags):
            by_interval.setdefault(tag.poll_interval_s or self.config.poll_interval_s, []).append(self._span(i))
        groups = []
        for interval, spans in sorted(by_interval.items()):
            reads = [self._planned(r) for r in self.planner.plan(spans)]
            names = tuple(name for read in reads for name in read.decoder.names)
            groups.append(_PollGroup(interval_s=interval, reads=reads, names=names))
        return groups

    def _span(self, i: int) -> TagSpan:
        """Tag ``i`` of the device as the planner sees it; its key is the index."""
        tag = self.config.tags[i]
        return TagSpan(key=i, table=tag.table, address=tag.address, count=tag.registers)

    def _planned(self, request: ReadRequest) -> _PlannedRead:
        indices = array("I", cast("list[int]", [span.key for span in request.tags]))  # keys are tag indices
        config = self.config
        tags = [compile_tag(self.name, config.tags[i], config.order) for i in indices]
        decoder: RegisterBlockDecoder | BitBlockDecoder
        if request.table in BIT_TABLES:
            decoder = BitBlockDecoder(request.address, request.count, tags)
        else:
            decoder = RegisterBlockDecoder(request.address, request.count, tags)
        return _PlannedRead(replace(request, tags=()), indices, decoder)

    def _split(self, read: _PlannedRead) -> list[_PlannedRead]:
        """The requests that replace one the device refused (illegal data address), planned gap-free."""
        request = replace(read.request, tags=tuple(self._span(i) for i in read.tags))
        return [self._planned(r) for r in self.planner.split(request)]

    async def run(self) -> None:
        try:
            link = acquire_link(self.config, self.clock)
        except DriverError as exc:
            await self._report_forever(str(exc))
            return
        try:
            await self._poll_forever(link)
        finally:
            self.stats.connected = False
            release_link(link)

    async def _report_forever(self, reason: str) -> None:
        """A device that cannot be polled at all (conflicting settings) still reports, as bad samples."""
        self._log.error("modbus_device_unpollable", error=reason)
        self.stats.last_error = reason
        interval = min(g.interval_s for g in self.groups)
        while True:
            out = Poll()
            ts_ms = int(self.clock.time() * 1000)
            for group in self.groups:
                bad_samples(out, group.names, ts_ms, reason)
            self._count(out, failed=True, reason=reason)
            self.sink(out)
            await self.clock.sleep(interval)

    async def _poll_forever(self, link: ModbusLink) -> None:
        clock = self.clock
        start = clock.monotonic()
        for group in self.groups:
            group.next_due = start
        while True:
            now = clock.monotonic()
            due = [g for g in self.groups if g.next_due <= now]
            for group in due:
                await self.poll_group(link, group)
            after = clock.monotonic()
            for group in due:
                group.next_due += group.interval_s
                if group.next_due <= after:
                    missed = math.floor((after - group.next_due) / group.interval_s) + 1
                    self.stats.skipped_polls += missed
                    group.next_due += missed * group.interval_s
            wait = min(g.next_due for g in self.groups) - clock.monotonic()
            if wait > 0:
                await clock.sleep(wait)

    async def poll_group(self, link: ModbusLink, group: _PollGroup) -> Poll:
        """Poll every request of one group once, hand the readings to the sink, and return them."""
        clock = self.clock
        began = clock.monotonic()
        out = Poll()
        failure: str | None = None
        if not await link.ensure_connected():
            failure = link.not_connected_reason()
            bad_samples(out, group.names, int(clock.time() * 1000), failure)
        elif not self.unit_backoff.may_poll(began):
            failure = (
                f"unit {self.config.unit} not answering, retried every {self.unit_backoff.delay_s:g} s "
                f"({self._last_no_response})"
            )
            bad_samples(out, group.names, int(clock.time() * 1000), failure)
        else:
            failure = await self._read_group(link, group, out)
        self.stats.last_poll_duration_s = clock.monotonic() - began
        self.stats.polls += 1
        self.stats.connected = link.connected
        self._count(out, failed=failure is not None, reason=failure)
        self.sink(out)
        return out

    async def _read_group(self, link: ModbusLink, group: _PollGroup, out: Poll) -> str | None:
        """Read each request; returns the first failure reason, or None when every request was answered."""
        config = self.config
        failure: str | None = None
        answered = False
        reads = group.reads
        i = 0
        while i < len(reads):
            read = reads[i]
            request = read.request
            try:
                data = await link.read(
                    config.unit,
                    request.function_code,
                    request.address,
                    request.count,
                    timeout_s=config.timeout_s,
                    retries=config.retries,
                )
            except ExceptionResponseError as exc:
                answered = True
                if exc.code == ILLEGAL_DATA_ADDRESS and len(read.tags) > 1:
                    replacement = self._split(read)
                    if len(replacement) > 1:
                        self._log.info(
                            "modbus_request_split",
                            table=request.table,
                            address=request.address,
                            count=request.count,
                            requests=len(replacement),
                        )
                        reads[i : i + 1] = replacement
                        continue
                failure = failure or exc.reason
                bad_samples(out, read.decoder.names, int(self.clock.time() * 1000), exc.reason)
            except (NoResponseError, NotConnectedError) as exc:
                # The unit (or the link) is gone: do not spend another timeout per remaining request.
                failure = failure or exc.reason
                ts_ms = int(self.clock.time() * 1000)
                for rest in reads[i:]:
                    bad_samples(out, rest.decoder.names, ts_ms, exc.reason)
                if isinstance(exc, NoResponseError) and not answered:
                    self._last_no_response = exc.reason
                    self.unit_backoff.record_failure(self.clock.monotonic())
                break
            except ReadError as exc:
                answered = True
                failure = failure or exc.reason
                bad_samples(out, read.decoder.names, int(self.clock.time() * 1000), exc.reason)
            else:
                answered = True
                decoder = read.decoder
                if type(decoder) is RegisterBlockDecoder:
                    decoder.decode_poll(out, data, int(self.clock.time() * 1000))
                else:
                    decoder.decode(out, data, int(self.clock.time() * 1000))  # type: ignore[arg-type]
            i += 1
        if answered:
            self.unit_backoff.record_success()
        return failure

    def _count(self, out: Poll, *, failed: bool, reason: str | None) -> None:
        stats = self.stats
        n = len(out)
        bad = out.not_good()
        stats.samples += n
        stats.bad_samples += bad
        if failed:
            stats.errors += 1
            stats.last_error = reason
            if self._failing is None:
                self._failing = reason
                self._failing_since = self.clock.monotonic()
                self._log.warning("modbus_device_failing", error=reason, unit=self.config.unit)
            else:
                self._failing = reason
        else:
            stats.last_ok_ms = int(self.clock.time() * 1000)
            if self._failing is not None:
                self._log.info(
                    "modbus_device_recovered",
                    unit=self.config.unit,
                    outage_s=round(self.clock.monotonic() - self._failing_since, 3),
                    error=self._failing,
                )
                self._failing = None
