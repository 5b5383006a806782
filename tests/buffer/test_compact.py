"""The file shrinks again after a drained backlog, in bounded steps."""

from __future__ import annotations

from pathlib import Path

from agent.protocol import wire
from buffer import AsyncDiskQueue, DiskQueue
from tests.buffer.frames import ChainMaker


def _file_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in (path, path.with_name(path.name + "-wal")) if p.exists())


def _drained(path: Path) -> DiskQueue:
    q = DiskQueue(path, max_bytes=1 << 30, frame_tags=wire.frame_tags, min_free_bytes=0,
                  sync="normal")  # durability is not under test
    q.open()
    chain = ChainMaker()
    for _ in range(400):
        q.append(chain.next(padding=5000))
    q.ack(range(1, 401))
    return q


def test_compact_returns_free_pages_in_bounded_steps_until_the_file_is_small(tmp_path: Path) -> None:
    """Each compact() call frees at most max_pages; repeated calls bring a drained 2 MB store under 64 KB."""
    path = tmp_path / "b.sqlite"
    q = _drained(path)
    full = _file_bytes(path)
    steps = []
    while (freed := q.compact(max_pages=100)) > 0:
        steps.append(freed)

    assert full > 2_000_000
    assert steps[0] == 100
    assert max(steps) <= 100
    assert _file_bytes(path) < 64 * 1024
    assert path.with_name(path.name + "-wal").stat().st_size == 0  # checkpointed and truncated
    assert q.chain_head()[0] == 400  # compaction never touches the chain
    q.close()


async def test_idle_wait_runs_one_compaction_step(tmp_path: Path) -> None:
    """When wait_for_data times out (nothing appended), one bounded compaction step runs."""
    path = tmp_path / "b.sqlite"
    _drained(path).close()
    # close() checkpoints, but free pages stay in the file until an incremental vacuum.
    before = _file_bytes(path)
    assert before > 2_000_000
    async with AsyncDiskQueue(path, max_bytes=1 << 30, frame_tags=wire.frame_tags, min_free_bytes=0,
                              compact_pages=50) as q:
        assert await q.wait_for_data(0.01) is False
        after = _file_bytes(path)

    assert before - after == 50 * 4096
