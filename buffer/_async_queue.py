"""AsyncDiskQueue: the DiskQueue for the event loop.

Every call runs in ONE dedicated worker thread (a single-worker executor), never on the loop: an fsync on
slow flash can take tens of milliseconds and must not stall polling. One thread also gives the SQLite
connection its single owner, so calls are serialised in the order they were made without a lock.
``asyncio.to_thread`` was rejected: it uses the shared default pool, so two calls could run at once.
"""

from __future__ import annotations

__all__ = ["AsyncDiskQueue"]

import asyncio
import functools
from collections.abc import Callable, Collection, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import Self, TypeVar

from agent.core import cancellation
from buffer._disk_queue import DiskQueue
from buffer._model import BufferStats, DropRecord, FrameTags, PreviousRun, QueuedBatch

T = TypeVar("T")


class AsyncDiskQueue:
    """The same methods as :class:`DiskQueue`, as coroutines, plus :meth:`wait_for_data`.

    Cancelling a coroutine does not cancel the call already running in the worker: a cancelled ``append``
    may still have committed. After cancellation, ask :meth:`chain_head` before appending again.
    """

    def __init__(self, path: Path, *, max_bytes: int, frame_tags: FrameTags, sync: str = "full",
                 min_free_bytes: int = 64 << 20, free_disk: Callable[[Path], int] | None = None,
                 disk_size: Callable[[Path], int] | None = None, compact_pages: int = 256) -> None:
        self.queue = DiskQueue(path, max_bytes=max_bytes, frame_tags=frame_tags, sync=sync,
                               min_free_bytes=min_free_bytes, free_disk=free_disk, disk_size=disk_size)
        self._compact_pages = compact_pages
        self._executor: ThreadPoolExecutor | None = None
        self._appended = asyncio.Event()

    async def _call(self, fn: Callable[..., T], *args: object, **kwargs: object) -> T:
        if self._executor is None:
            name = f"buffer[{self.queue.path.name}]"
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        call = functools.partial(fn, *args, **kwargs)
        return await asyncio.get_running_loop().run_in_executor(self._executor, call)

    async def open(self) -> None:
        await self._call(self.queue.open)

    async def close(self) -> None:
        if self._executor is None:
            return
        try:
            await self._call(self.queue.close)
        finally:
            executor, self._executor = self._executor, None
            executor.shutdown(wait=False)

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(self, et: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    async def chain_head(self) -> tuple[int, bytes]:
        return await self._call(self.queue.chain_head)

    async def append(self, batch: QueuedBatch, *, declares: Sequence[int] = ()) -> None:
        await self._call(self.queue.append, batch, declares=tuple(declares))
        self._appended.set()

    async def peek(self, limit: int, *, kinds: Collection[str] | None = None, newest_first: bool = False,
                   exclude: Collection[int] = ()) -> list[QueuedBatch]:
        return await self._call(self.queue.peek, limit, kinds=None if kinds is None else tuple(kinds),
                                newest_first=newest_first, exclude=tuple(exclude))

    async def ack(self, seqs: Iterable[int]) -> int:
        # A range stays a range (one DELETE, no million-element tuple); anything else is copied now, so the
        # caller may change its collection while the worker runs.
        return await self._call(self.queue.ack, seqs if isinstance(seqs, range) else tuple(seqs))

    async def previous_run(self) -> PreviousRun:
        return await self._call(self.queue.previous_run)

    @property
    def condition(self) -> str | None:
        """What the last append found (``DiskQueue.condition``). Read without the worker: a snapshot of one
        attribute the worker replaces whole, so it may lag a call still running, never tear."""
        return self.queue.condition

    async def pending_drops(self) -> list[DropRecord]:
        return await self._call(self.queue.pending_drops)

    async def stats(self) -> BufferStats:
        return await self._call(self.queue.stats)

    async def compact(self, max_pages: int = 256) -> int:
        return await self._call(self.queue.compact, max_pages)

    async def wait_for_data(self, timeout: float) -> bool:  # noqa: ASYNC109 - the agreed API
        """Return True as soon as a batch was appended since the previous call returned True, else False
        after ``timeout`` seconds. An idle timeout is used for one bounded compaction step."""
        if not self._appended.is_set():
            try:
                async with cancellation.timeout(timeout):
                    await self._appended.wait()
            except TimeoutError:
                await self.compact(self._compact_pages)
                return False
        self._appended.clear()
        return True
