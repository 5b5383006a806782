"""The serial driver: one port, one instrument (or one RS-485 bus of them), supervised.

Life cycle, repeated until cancelled::

    open the port --fail--> outage: BAD samples every interval_s, retry with Backoff (one warning per outage)
        |
    session: loop.add_reader feeds whole chunks to the framer
        stream mode: every chunk's frames are decoded and handed to the sink at once; a watcher gives up
                     unfinished frames after frame_gap_s and marks every tag BAD after silence_s without data
        poll mode:   every interval_s, for each address: drop stale input, send the command, wait up to
                     timeout_s for a decodable answer; no answer gives that address's tags BAD samples
        |
    read/write error or EOF (cable pulled, USB adapter gone) --> outage

Everything that is skipped is counted in :attr:`SerialDriver.rejects` by reason (framing and decoding
reasons alike), so garbage on the line is visible in the metrics and never silently eats data.
"""

from __future__ import annotations

__all__ = ["SerialDriver"]

import asyncio
import contextlib
import math
from collections import Counter, deque
from collections.abc import Sequence

import structlog

from agent.core.backoff import Backoff
from agent.core.cancellation import TaskGroup, timeout
from agent.core.clock import Clock
from agent.core.errors import DriverError
from agent.core.sample import Quality, Sample, SampleSink
from drivers import Driver
from drivers.serial.config import SerialDevice
from drivers.serial.decoding import DecodeError, FieldValue
from drivers.serial.port import SerialPort, open_port
from drivers.serial.samples import TagMapper

log = structlog.get_logger(__name__)


class SerialDriver(Driver):
    """Reads one :class:`~drivers.serial.config.SerialDevice`. See the module docstring for the life cycle."""

    config: SerialDevice

    def __init__(
        self, name: str, config: SerialDevice, sink: SampleSink, *, clock: Clock | None = None
    ) -> None:
        super().__init__(name, config, sink, clock=clock)
        self.rejects: Counter[str] = Counter()
        """Skipped input by reason: noise, partial, bad checksum, bad length, too long, no match, ..."""
        self.frames = 0
        """Frames accepted and decoded."""
        self.outages = 0
        """Times the port was found missing or lost."""
        self._framer = config.framer(self.rejects)
        self._decoder = config.decoder()
        self._mapper = TagMapper(name, config.tags)
        addresses = config.poll.addresses if config.poll else []
        self._by_address = {
            a: TagMapper(name, [t for t in config.tags if t.address in (a, None)]) for a in addresses
        }
        self._backoff = Backoff(0.5, max(0.5, config.reconnect_max_s))
        self._answers: deque[bytes] = deque()
        self._answer_ready = asyncio.Event()
        self._last_rx = 0.0
        self._last_frame = 0.0
        self._silent = False
        self._failing: set[int] = set()
        self._outage_since: float | None = None
        self._next_bad = 0.0

    # -- supervision -------------------------------------------------------------------------------------

    async def run(self) -> None:
        while True:
            try:
                port = open_port(self.name, self.config)
            except DriverError as exc:
                self._lost(exc)
                await self._wait_in_outage(self._backoff.next())
                continue
            if self._outage_since is not None:
                log.info(
                    "serial_port_reopened",
                    device=self.name,
                    port=self.config.port,
                    outage_s=round(self.clock.monotonic() - self._outage_since, 1),
                )
                self._outage_since = None
            self._backoff.reset()
            try:
                error = await self._session(port)
            finally:
                port.close()
                self.stats.connected = False
            self._lost(error)

    def _lost(self, exc: DriverError) -> None:
        """Record that the port is unavailable; warn once per outage and start the BAD-sample clock."""
        self.stats.connected = False
        self.stats.errors += 1
        self.stats.last_error = exc.message
        if self._outage_since is None:
            self.outages += 1
            now = self.clock.monotonic()
            self._outage_since = now
            self._next_bad = now
            log.warning("serial_port_unavailable", device=self.name, port=self.config.port, error=str(exc))

    async def _wait_in_outage(self, delay: float) -> None:
        """Sleep ``delay`` before the next reopen attempt, with BAD samples every ``interval_s`` meanwhile."""
        deadline = self.clock.monotonic() + delay
        while True:
            now = self.clock.monotonic()
            if now >= self._next_bad:
                self._deliver(self._mapper.bad(self._ts_ms(), f"port unavailable: {self.stats.last_error}"))
                self._next_bad = max(self._next_bad + self.config.interval_s, now)
                self.stats.skipped_polls += self.config.mode == "poll"
            if now >= deadline:
                return
            await self.clock.sleep(min(deadline, self._next_bad) - now)

    async def _session(self, port: SerialPort) -> DriverError:
        """Read the open port until it fails; return why it failed."""
        loop = asyncio.get_running_loop()
        lost: asyncio.Future[None] = loop.create_future()
        self._framer.clear()
        self._answers.clear()
        self.stats.connected = True
        self._last_rx = self._last_frame = self.clock.monotonic()
        self._silent = False
        on_data = self._on_stream_data if self.config.mode == "stream" else self._on_poll_data
        fd = port.fileno()

        def readable() -> None:
            try:
                data = port.read_available()
            except DriverError as exc:
                loop.remove_reader(fd)
                if not lost.done():
                    lost.set_exception(exc)
                return
            if not data:
                return
            try:
                on_data(data)
            except Exception as exc:  # a bug (ours or the sink's), not device trouble: make it visible
                loop.remove_reader(fd)
                if not lost.done():
                    lost.set_exception(exc)

        loop.add_reader(fd, readable)
        failure: DriverError | None = None
        try:
            async with TaskGroup() as tg:
                tg.create_task(self._until_lost(lost), name=f"serial[{self.name}].reader")
                if self.config.mode == "stream":
                    tg.create_task(self._watch_stream(), name=f"serial[{self.name}].watch")
                else:
                    tg.create_task(self._poll_loop(port), name=f"serial[{self.name}].poll")
        except* DriverError as group:
            failure = group.exceptions[0]  # type: ignore[assignment]
        finally:
            loop.remove_reader(fd)
            if not lost.done():
                lost.cancel()
        assert failure is not None, "session tasks run until the port fails or the driver is cancelled"
        return failure

    @staticmethod
    async def _until_lost(lost: asyncio.Future[None]) -> None:
        await lost

    # -- stream mode -------------------------------------------------------------------------------------

    def _on_stream_data(self, data: bytes) -> None:
        self._last_rx = self.clock.monotonic()
        bodies = self._framer.feed(data)
        if bodies:
            self._emit_stream(bodies)

    def _emit_stream(self, bodies: Sequence[bytes]) -> None:
        ts_ms = self._ts_ms()
        decode = self._decoder.decode
        samples: list[Sample] = []
        for body in bodies:
            try:
                fields = decode(body)
            except DecodeError as exc:
                self.rejects[exc.reason] += 1
                continue
            self.frames += 1
            samples.extend(self._mapper.samples(fields, ts_ms))
        if not samples:
            return
        self._last_frame = self.clock.monotonic()
        if self._silent:
            self._silent = False
            log.info("serial_data_resumed", device=self.name)
        self.stats.polls += 1
        self._deliver(samples)

    async def _watch_stream(self) -> None:
        cfg = self.config
        tick = max(0.01, min(cfg.frame_gap_s, cfg.interval_s, cfg.silence_s) / 2)
        next_bad = 0.0
        while True:
            await self.clock.sleep(tick)
            now = self.clock.monotonic()
            if self._framer.pending and now - self._last_rx >= cfg.frame_gap_s:
                bodies = self._framer.expire()
                if bodies:
                    self._emit_stream(bodies)
            if now - self._last_frame < cfg.silence_s:
                continue
            if not self._silent:
                self._silent = True
                next_bad = now
                self.stats.errors += 1
                self.stats.last_error = f"no data for {cfg.silence_s:g} s"
                log.warning("serial_no_data", device=self.name, port=cfg.port, silence_s=cfg.silence_s)
            if now >= next_bad:
                self._deliver(self._mapper.bad(self._ts_ms(), f"no data for {cfg.silence_s:g} s"))
                next_bad = now + cfg.interval_s

    # -- poll mode ---------------------------------------------------------------------------------------

    def _on_poll_data(self, data: bytes) -> None:
        self._last_rx = self.clock.monotonic()
        bodies = self._framer.feed(data)
        if bodies:
            self._answers.extend(bodies)
            self._answer_ready.set()

    async def _poll_loop(self, port: SerialPort) -> None:
        cfg = self.config
        assert cfg.poll is not None
        next_round = self.clock.monotonic()
        while True:
            started = self.clock.monotonic()
            samples: list[Sample] = []
            try:
                for address in cfg.poll.addresses:
                    samples.extend(await self._poll_one(port, address))
            finally:
                # Answers already read are delivered even if the port fails mid-round.
                self._deliver(samples)
            self.stats.polls += 1
            now = self.clock.monotonic()
            self.stats.last_poll_duration_s = now - started
            next_round += cfg.interval_s
            if next_round < now:
                missed = math.ceil((now - next_round) / cfg.interval_s)
                self.stats.skipped_polls += missed
                next_round += missed * cfg.interval_s
            await self.clock.sleep(next_round - now)

    async def _poll_one(self, port: SerialPort, address: int) -> list[Sample]:
        """Send the command for ``address`` and turn its answer, or the lack of one, into samples."""
        cfg = self.config
        assert cfg.poll is not None
        mapper = self._by_address[address]
        if self._answers:
            self.rejects["unsolicited"] += len(self._answers)
            self._answers.clear()
        self._framer.clear()
        rejected_before = self.rejects.copy()
        port.write(cfg.poll_command(address))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + cfg.poll.timeout_s
        reason = "timeout"
        expired = False
        while True:
            fields, reason = self._take_answer(address, reason)
            if fields is not None:
                if address in self._failing:
                    self._failing.discard(address)
                    log.info("serial_address_answering", device=self.name, address=address)
                return mapper.samples(fields, self._ts_ms())
            remaining = deadline - loop.time()
            if remaining <= 0:
                if expired:
                    break
                # Last chance: an answer may sit behind a candidate frame that will never complete.
                expired = True
                self._answers.extend(self._framer.expire())
                continue
            self._answer_ready.clear()
            with contextlib.suppress(TimeoutError):
                async with timeout(remaining):
                    await self._answer_ready.wait()
        if reason == "timeout":
            # Bytes came but the framer threw them away (bad checksum, bad length...): say so, it is
            # a wiring or profile problem, not a silent instrument.
            rejected = sorted((self.rejects - rejected_before).keys() - {"stale"})
            if len(rejected) > 1 and "noise" in rejected:
                rejected.remove("noise")  # the stray bytes around a damaged answer are not the news
            if rejected:
                reason = "bad answer: " + ", ".join(rejected)
        self.stats.errors += 1
        self.stats.last_error = f"address {address}: {reason}"
        if address not in self._failing:
            self._failing.add(address)
            log.warning("serial_address_not_answering", device=self.name, address=address, error=reason)
        return mapper.bad(self._ts_ms(), reason)

    def _take_answer(self, address: int, reason: str) -> tuple[dict[str, FieldValue] | None, str]:
        """The first queued frame that decodes and comes from ``address``; otherwise why none did."""
        while self._answers:
            body = self._answers.popleft()
            try:
                fields = self._decoder.decode(body)
            except DecodeError as exc:
                self.rejects[exc.reason] += 1
                reason = f"bad answer: {exc.reason}"
                continue
            if not self._from_address(fields, address):
                self.rejects["wrong address"] += 1
                reason = "answer from another address"
                continue
            self.frames += 1
            return fields, reason
        return None, reason

    def _from_address(self, fields: dict[str, FieldValue], address: int) -> bool:
        assert self.config.poll is not None
        name = self.config.poll.address_field
        if name is None:
            return True
        value = fields.get(name)
        try:
            return int(value) == address  # type: ignore[arg-type]
        except (TypeError, ValueError):
            return False

    # -- delivery ----------------------------------------------------------------------------------------

    def _ts_ms(self) -> int:
        return int(self.clock.time() * 1000)

    def _deliver(self, samples: list[Sample]) -> None:
        if not samples:
            return
        bad = sum(1 for s in samples if s.quality is Quality.BAD)
        self.stats.samples += len(samples)
        self.stats.bad_samples += bad
        if bad < len(samples):
            self.stats.last_ok_ms = samples[-1].ts_ms
        self.sink(samples)
