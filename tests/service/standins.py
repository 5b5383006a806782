"""Stand-ins for the buffer, the uplink and a field driver, for service tests that are not about them.

The service layer (sd_notify, watchdog, health endpoint, metrics) is tested against the real
:class:`agent.runtime.Agent`, pipeline and batcher. Where the real buffer, MQTT uplink or a field driver
is not what the test is about, these small in-memory implementations of their contracts take their place,
handed to the agent as its factories (:meth:`StandIns.agent`), and each can be stalled on purpose to test the
watchdog. Replacing module attributes instead was rejected: it reaches every agent in the process, and a
test forgetting to undo it breaks the next one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import drivers
from agent.core.clock import Clock
from agent.core.errors import BufferStoreError
from agent.core.sample import Quality, Sample, SampleSink
from agent.protocol.signing import BatchSigner, TrustStore
from agent.protocol.wire import GENESIS_HASH
from agent.runtime import Agent
from buffer import PreviousRun, QueuedBatch
from config.schema import AgentConfig, MqttConfig


@dataclass(slots=True)
class MemoryBufferStats:
    batches: int = 0
    bytes: int = 0
    oldest_created_ms: int | None = None
    by_kind: dict[str, int] = field(default_factory=dict)
    appended: int = 0
    acked: int = 0
    dropped_batches: int = 0
    dropped_records: int = 0
    drops_by_reason: dict[str, int] = field(default_factory=dict)
    set_aside: int = 0
    condition: str | None = None


class MemoryQueue:
    """The AsyncDiskQueue contract in memory. ``stall()`` makes append and stats hang until ``unstall()``."""

    def __init__(self, path: Path, *, max_bytes: int, sync: str = "full", min_free_bytes: int = 0) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self._batches: dict[int, QueuedBatch] = {}
        self._head: tuple[int, bytes] = (0, GENESIS_HASH)
        self._open_gate = asyncio.Event()
        self._open_gate.set()
        self._data = asyncio.Event()
        self.appended = 0
        self.acked = 0
        self.drops_by_reason: dict[str, int] = {}

    def stall(self) -> None:
        self._open_gate.clear()

    def unstall(self) -> None:
        self._open_gate.set()

    async def open(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def chain_head(self) -> tuple[int, bytes]:
        return self._head

    async def append(self, batch: QueuedBatch, *, declares: Sequence[int] = ()) -> None:
        await self._open_gate.wait()
        if batch.seq != self._head[0] + 1:
            raise BufferStoreError(f"seq {batch.seq} does not follow head {self._head[0]}")
        self._batches[batch.seq] = batch
        self._head = (batch.seq, batch.hash)
        self.appended += 1
        self._data.set()

    async def peek(self, limit: int, *, kinds: Collection[str] | None = None, newest_first: bool = False,
                   exclude: Collection[int] = ()) -> list[QueuedBatch]:
        seqs = sorted(self._batches, reverse=newest_first)
        out = [self._batches[s] for s in seqs
               if s not in exclude and (kinds is None or self._batches[s].kind in kinds)]
        return out[:limit]

    async def ack(self, seqs: Iterable[int]) -> int:
        n = 0
        for s in seqs:
            if self._batches.pop(s, None) is not None:
                n += 1
        self.acked += n
        return n

    async def pending_drops(self) -> list[Any]:
        return []

    async def previous_run(self) -> PreviousRun:
        return PreviousRun(clean=True, last_t1_ms=None)

    condition: str | None = None

    async def stats(self) -> MemoryBufferStats:
        await self._open_gate.wait()
        by_kind: dict[str, int] = {}
        for b in self._batches.values():
            by_kind[b.kind] = by_kind.get(b.kind, 0) + 1
        return MemoryBufferStats(
            batches=len(self._batches), bytes=sum(len(b.frame) for b in self._batches.values()),
            oldest_created_ms=min((b.created_ms for b in self._batches.values()), default=None),
            by_kind=by_kind, appended=self.appended, acked=self.acked,
            drops_by_reason=dict(self.drops_by_reason))

    async def wait_for_data(self, timeout: float) -> bool:  # noqa: ASYNC109 -- AsyncDiskQueue's signature
        try:
            async with asyncio.timeout(timeout):
                await self._data.wait()
        except TimeoutError:
            return False
        self._data.clear()
        return True


@dataclass(slots=True)
class UplinkStats:
    connected: bool = False
    published: int = 0
    acked: int = 0
    publish_timeouts: int = 0
    reconnects: int = 0
    inflight: int = 0
    bad_backend_acks: int = 0
    unverified_acks: int = 0
    last_error: str | None = None


class LoopbackUplink:
    """Acknowledges every stored batch at once, as a healthy link would. ``wedge()`` makes it stop making
    progress while staying 'connected'; ``disconnect()`` makes it wait as if in reconnect backoff."""

    def __init__(self, config: Any, gateway_id: str, queue: MemoryQueue, *, clock: Clock | None = None,
                 archive_keys: TrustStore | None = None) -> None:
        self.queue = queue
        self.archive_keys = archive_keys
        self.stats = UplinkStats()
        self.wedged = False
        self.online = True

    def use_archive_keys(self, keys: TrustStore) -> None:
        self.archive_keys = keys

    def wedge(self) -> None:
        self.wedged = True

    def disconnect(self) -> None:
        self.online = False
        self.stats.connected = False
        self.stats.last_error = "connection refused"

    async def run(self) -> None:
        while True:
            self.stats.connected = self.online
            if self.online and not self.wedged:
                batches = await self.queue.peek(100)
                self.stats.published += len(batches)
                self.stats.acked += await self.queue.ack(b.seq for b in batches)
            await self.queue.wait_for_data(0.05)


class SimDriver(drivers.Driver):
    """A device that answers every poll with a ramp value per tag. ``gate`` hangs its poll loop when cleared."""

    def __init__(self, name: str, config: Any, sink: SampleSink, *, clock: Clock | None = None) -> None:
        super().__init__(name, config, sink, clock=clock)
        self.gate = asyncio.Event()
        self.gate.set()
        self._tags = [f"{name}.{t.name}" for t in config.tags]

    async def run(self) -> None:
        clock = self.clock
        interval = float(self.config.poll_interval_s)
        n = 0
        while True:
            await self.gate.wait()  # a stuck poll: no counter moves
            now_ms = int(clock.time() * 1000)
            n += 1
            self.stats.connected = True
            self.stats.polls += 1
            self.sink([Sample(tag, now_ms, float(n + i), Quality.GOOD, None) for i, tag in enumerate(self._tags)])
            self.stats.samples += len(self._tags)
            self.stats.last_ok_ms = now_ms
            self.stats.last_poll_duration_s = 0.0001
            await clock.sleep(interval - clock.time() % interval)


class StandIns:
    """The agent's factories, making stand-ins and keeping each one made (reloads make new drivers and
    uplinks), so a test can reach and stall them."""

    def __init__(self) -> None:
        self.queues: list[MemoryQueue] = []
        self.uplinks: list[LoopbackUplink] = []
        self.drivers: list[SimDriver] = []

    def make_queue(self, path: Path, *, max_bytes: int, sync: str, min_free_bytes: int) -> MemoryQueue:
        self.queues.append(MemoryQueue(path, max_bytes=max_bytes, sync=sync, min_free_bytes=min_free_bytes))
        return self.queues[-1]

    def make_uplink(self, config: MqttConfig, gateway_id: str, queue: MemoryQueue, *, clock: Clock,
                    archive_keys: TrustStore | None, catalogue: Callable[[], int]) -> LoopbackUplink:
        del catalogue  # the loopback uplink publishes no status
        self.uplinks.append(LoopbackUplink(config, gateway_id, queue, clock=clock, archive_keys=archive_keys))
        return self.uplinks[-1]

    def make_driver(self, name: str, config: Any, sink: SampleSink, *, clock: Clock) -> SimDriver:
        """A SimDriver for every device, whatever its protocol."""
        self.drivers.append(SimDriver(name, config, sink, clock=clock))
        return self.drivers[-1]

    def agent(self, config: AgentConfig, **kwargs: Any) -> Agent:
        """The real agent, running on these stand-ins."""
        return Agent(config, make_queue=self.make_queue, make_uplink=self.make_uplink,
                     make_driver=self.make_driver, **kwargs)


def archive_keys_file(tmp_path: Path) -> Path:
    """An archive keys file listing a fresh key: the default ack mode needs one, and the agent reads it."""
    path = tmp_path / "archive.keys"
    if not path.exists():
        path.write_text(BatchSigner(Ed25519PrivateKey.generate()).public_text + "\n")
    return path


def make_config(tmp_path: Path, *, devices: int = 2, tags: int = 3, poll_s: float = 0.2, window_s: int = 1,
                batch_interval_s: float = 0.2, health_listen: str = "127.0.0.1:0") -> AgentConfig:
    return AgentConfig.model_validate({
        "gateway": {"id": "gw-test", "key_file": str(tmp_path / "unused.pem"), "state_dir": str(tmp_path / "state")},
        "mqtt": {"host": "127.0.0.1", "archive_keys_file": str(archive_keys_file(tmp_path))},
        "pipeline": {"window_s": window_s, "late_grace_s": 0.1, "batch_interval_s": batch_interval_s},
        "health": {"listen": health_listen},
        "devices": {
            f"plc{d}": {"protocol": "modbus-tcp", "host": "127.0.0.1", "poll_interval_s": poll_s,
                        "tags": [{"name": f"t{i}", "address": i} for i in range(tags)]}
            for d in range(devices)
        },
    })


def config_toml(config: AgentConfig) -> str:
    """The TOML text of a configuration (for reload tests that edit the file)."""
    data = config.model_dump(mode="json", exclude_none=True)
    lines: list[str] = []

    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, str):
            return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
        return repr(v)

    def table(prefix: str, d: dict[str, Any]) -> None:
        scalars = {k: v for k, v in d.items() if not isinstance(v, dict | list)}
        if prefix:
            lines.append(f"[{prefix}]")
        lines.extend(f"{k} = {value(v)}" for k, v in scalars.items())
        for k, v in d.items():
            if isinstance(v, dict):
                table(f"{prefix}.{k}" if prefix else k, v)
            elif isinstance(v, list):
                for item in v:
                    lines.append(f"[[{prefix}.{k}]]")
                    lines.extend(f"{ik} = {value(iv)}" for ik, iv in item.items())

    table("", data)
    return "\n".join(lines) + "\n"
