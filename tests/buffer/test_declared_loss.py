"""Declared loss is never itself lost: gap and catalog batches are never evicted, the buffer drops (or refuses)
data instead, says so, and a start after an unclean stop knows where collection stopped."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.core.errors import BufferFull
from agent.protocol import wire
from buffer import ROW_OVERHEAD, DiskQueue, QueuedBatch, fit_limits
from buffer._disk_queue import RECORD_TAGS
from tests.buffer.frames import ChainMaker
from tests.buffer.test_crash import run_and_kill
from tests.peers.tmpfs import tmpfs

MIB = 1 << 20
PLENTY = 1 << 40


def _queue(path: Path, *, max_bytes: int = 1 << 30, min_free_bytes: int = 0, free: dict[str, int] | None = None,
           disk_size: int = PLENTY) -> DiskQueue:
    disk = free if free is not None else {"bytes": PLENTY}
    return DiskQueue(path, max_bytes=max_bytes, frame_tags=wire.frame_tags, min_free_bytes=min_free_bytes,
                     free_disk=lambda _: disk["bytes"], disk_size=lambda _: disk_size)


def _kinds(q: DiskQueue) -> list[tuple[int, str]]:
    return [(b.seq, b.kind) for b in q.peek(1000)]


def test_the_cap_never_evicts_gap_or_catalog_batches(tmp_path: Path) -> None:
    """Tightening the cap evicts data, then alarms, oldest first; gap and catalog batches stay."""
    chain = ChainMaker()
    batches = [chain.next(k, padding=1000 if k in ("data", "alarm") else 0)
               for k in ["gap", "catalog", "data", "alarm", "data", "gap"]]
    per = max(len(b.frame) for b in batches) + ROW_OVERHEAD
    q = _queue(tmp_path / "b.sqlite", max_bytes=per * 8)
    q.open()
    for b in batches:
        q.append(b)
    q.max_bytes = per * 3

    q.append(chain.next("alarm", padding=1000))

    kept = _kinds(q)
    assert [s for s, k in kept if k in ("gap", "catalog")] == [1, 2, 6]
    assert (7, "alarm") in kept
    dropped = {s for d in q.pending_drops() for s in range(d.first_seq, d.last_seq + 1)}
    assert dropped <= {3, 4, 5}
    assert {3, 5} <= dropped  # data before alarm
    q.close()


def test_gap_batches_alone_over_the_cap_refuse_data_and_keep_every_gap(tmp_path: Path) -> None:
    """When the batches that are never evicted fill the cap, a data append is refused (recoverable, counted,
    nothing changes); the gap batches all stay; once acks free room the same batch is accepted."""
    chain = ChainMaker()
    gaps = [chain.next("gap", tags=[f"plc.t{i}" for i in range(40)]) for _ in range(4)]
    per_gap = max(len(g.frame) for g in gaps) + ROW_OVERHEAD
    q = _queue(tmp_path / "b.sqlite", max_bytes=per_gap * 4 + 500)
    q.open()
    for g in gaps:
        q.append(g)
    head = q.chain_head()
    data = chain.next(padding=400)

    with pytest.raises(BufferFull) as info:
        q.append(data)

    assert info.value.recoverable
    assert info.value.condition == "buffer_full"
    assert q.chain_head() == head
    assert _kinds(q) == [(1, "gap"), (2, "gap"), (3, "gap"), (4, "gap")]
    s = q.stats()
    assert (s.refused, s.dropped_batches, s.condition) == (1, 0, "buffer_full")
    q.ack([1, 2])
    q.append(data)
    assert q.stats().condition is None
    q.close()


def test_below_the_watermark_a_gap_batch_is_refused_not_evicted_and_its_drops_stay_pending(tmp_path: Path) -> None:
    """The measured failure: with free disk below min_free_bytes every batch, gap batches included, was
    evicted as it was written. Now data and gap appends are refused with condition disk_full, nothing is
    evicted, and the drop records the gap batch would have declared stay pending."""
    free = {"bytes": PLENTY}
    chain = ChainMaker()
    first = chain.next(padding=1000)
    per = len(first.frame) + ROW_OVERHEAD
    q = _queue(tmp_path / "b.sqlite", max_bytes=per * 2, min_free_bytes=64 * MIB, free=free)
    q.open()
    q.append(first)
    for _ in range(3):
        q.append(chain.next(padding=1000))
    drops = q.pending_drops()
    assert [(d.first_seq, d.last_seq, d.reason) for d in drops] == [(1, 2, "cap")]
    free["bytes"] = 1 * MIB  # far below the watermark

    with pytest.raises(BufferFull) as info:
        q.append(chain.next("gap"), declares=[d.id for d in drops])
    assert info.value.condition == "disk_full"
    with pytest.raises(BufferFull):
        q.append(_same_seq_data(chain))

    assert q.pending_drops() == drops
    assert _kinds(q) == [(3, "data"), (4, "data")]
    s = q.stats()
    assert (s.condition, s.refused, s.dropped_batches) == ("disk_full", 2, 2)
    q.close()


def _same_seq_data(chain: ChainMaker) -> QueuedBatch:
    """A data batch in place of the one just refused (the head did not move)."""
    chain.seq -= 1
    return chain.next(padding=100)


def test_a_refused_declaration_unfreezes_its_drop_records_so_they_keep_coalescing(tmp_path: Path) -> None:
    """Drop records handed out by pending_drops() are frozen while a gap batch may be declaring them; when that
    gap batch is refused they thaw, so later evictions extend them instead of piling up new records."""
    free = {"bytes": PLENTY}
    chain = ChainMaker()
    first = chain.next(padding=1000)
    per = len(first.frame) + ROW_OVERHEAD
    q = _queue(tmp_path / "b.sqlite", max_bytes=per * 2, min_free_bytes=64 * MIB, free=free)
    q.open()
    q.append(first)
    for _ in range(2):
        q.append(chain.next(padding=1000))  # evicts 1
    drops = q.pending_drops()
    assert [(d.first_seq, d.last_seq) for d in drops] == [(1, 1)]
    free["bytes"] = 1 * MIB
    with pytest.raises(BufferFull):
        q.append(chain.next("gap"), declares=[d.id for d in drops])
    free["bytes"] = PLENTY
    chain.seq -= 1
    chain.prev = q.chain_head()[1]

    q.append(chain.next(padding=1000))  # evicts 2: extends the thawed record

    assert [(d.first_seq, d.last_seq) for d in q.pending_drops()] == [(1, 2)]
    q.close()


def test_condition_says_whether_the_last_append_dropped_data(tmp_path: Path) -> None:
    """None after an append that evicted nothing, "dropping" after one that evicted unsent data."""
    chain = ChainMaker()
    first = chain.next(padding=1000)
    per = len(first.frame) + ROW_OVERHEAD
    q = _queue(tmp_path / "b.sqlite", max_bytes=per * 2)
    q.open()
    q.append(first)
    assert q.condition is None
    q.append(chain.next(padding=1000))
    q.append(chain.next(padding=1000))
    assert q.condition == "dropping"
    assert q.stats().pending_drop_batches == 1
    q.ack([2, 3])
    q.append(chain.next(padding=1000))
    assert q.condition is None
    q.close()


# ---------------------------------------------------------------------------- limits that cannot fit


def test_a_watermark_larger_than_the_file_system_is_clamped_at_open(tmp_path: Path) -> None:
    """min_free_bytes of 64 MiB on a 20 MiB file system: clamped to half the file system, said in the stats;
    batches are then stored, not evicted as they are written."""
    q = _queue(tmp_path / "b.sqlite", min_free_bytes=64 * MIB, free={"bytes": 19 * MIB}, disk_size=20 * MIB)
    q.open()
    chain = ChainMaker()
    for _ in range(5):
        q.append(chain.next(padding=1000))

    s = q.stats()
    assert q.min_free_bytes == 10 * MIB
    assert any("buffer.min_free_bytes" in note for note in s.clamped)
    assert (s.batches, s.dropped_batches) == (5, 0)
    q.close()


def test_fit_limits_clamps_watermark_and_cap_to_the_file_system() -> None:
    """The one rule the buffer and `mine-agent validate` share."""
    fit = fit_limits(20 * MIB, max_bytes=4 << 30, min_free_bytes=64 * MIB)
    assert fit.min_free_bytes == 10 * MIB
    assert fit.max_bytes == 20 * MIB - 10 * MIB - 4 * MIB
    assert [n.split(":")[0] for n in fit.notes] == ["buffer.min_free_bytes", "buffer.max_bytes"]
    roomy = fit_limits(64 << 30, max_bytes=4 << 30, min_free_bytes=64 * MIB)
    assert (roomy.max_bytes, roomy.min_free_bytes, roomy.notes) == (4 << 30, 64 * MIB, ())


@pytest.fixture
def fs20(tmp_path: Path) -> Iterator[Path]:
    """A real 20 MiB tmpfs (root only; skipped with the reason otherwise)."""
    with tmpfs(tmp_path / "fs20", 20) as mnt:
        yield mnt


def test_default_watermark_on_a_real_20_mib_file_system_keeps_batches_and_every_gap(fs20: Path) -> None:
    """The measured case, on a real 20 MiB file system with the default limits (4 GiB cap, 64 MiB watermark):
    batches are kept, the oldest data is shed as disk_low once the clamped limits bind, every gap batch stays,
    and every seq is stored or pending as a drop."""
    q = DiskQueue(fs20 / "buffer.sqlite", max_bytes=4 << 30, frame_tags=wire.frame_tags)
    q.open()
    chain = ChainMaker()
    gaps = []
    n = 1200  # ~6 MiB of frames: more than the clamped cap holds
    for i in range(n):
        if i % 100 == 50:
            b = chain.next("gap")
            gaps.append(b.seq)
        else:
            b = chain.next(padding=5000)
        q.append(b)
        if i == 10:
            assert q.stats().batches == 11  # stored, not evicted as written

    stored = {b.seq for b in q.peek(n)}
    dropped = {s for d in q.pending_drops() for s in range(d.first_seq, d.last_seq + 1)}
    assert set(gaps) <= stored
    assert stored | dropped == set(range(1, n + 1))
    assert not stored & dropped
    assert n in stored
    assert q.stats().clamped
    q.close()


# ---------------------------------------------------------------------------- unclean stop


def test_previous_run_after_kill_9_is_unclean_with_the_last_t1(tmp_path: Path) -> None:
    """A real kill -9 of an appending process: the next open says the previous run did not close cleanly and
    knows the t1 of the last committed batch; after a clean close it says clean."""
    path = tmp_path / "buffer.sqlite"
    report = run_and_kill(path, commits=5)
    q = DiskQueue(path, max_bytes=1 << 30, frame_tags=wire.frame_tags, min_free_bytes=0)
    q.open()
    prev = q.previous_run()
    head = q.chain_head()[0]
    last = q.peek(1, newest_first=True)
    q.close()

    assert head >= report.committed[-1]
    assert prev.clean is False
    assert last
    assert prev.last_t1_ms == last[0].t1_ms

    q.open()
    assert q.previous_run().clean is True
    q.close()


def test_a_new_store_has_nothing_to_declare(tmp_path: Path) -> None:
    q = _queue(tmp_path / "b.sqlite")
    q.open()
    assert (q.previous_run().clean, q.previous_run().last_t1_ms) == (True, None)
    q.close()


def test_coalescing_keeps_every_drop_record_within_the_tag_bound(tmp_path: Path) -> None:
    """A long outage at the cap whose batches keep naming new tags (configuration changes): the records grow
    only up to RECORD_TAGS tag names, then a new one starts; together they still cover every evicted seq
    exactly once and name every evicted tag. A single batch of more tags than that is a record of its own."""
    chain = ChainMaker()
    tags_of = {k: [f"d{k}.t{i:04d}" for i in range(1500)] for k in range(12)}
    tags_of[12] = [f"big.t{i:05d}" for i in range(RECORD_TAGS + 500)]
    batches = [chain.next("data", tags=tags_of[k]) for k in range(13)]
    per = max(len(b.frame) for b in batches[:12]) + ROW_OVERHEAD
    big = len(batches[12].frame) + ROW_OVERHEAD
    q = _queue(tmp_path / "b.sqlite", max_bytes=per * 2)
    q.open()
    for b in batches[:12]:
        q.append(b)
    q.max_bytes = big + per  # the big batch evicts the small ones left
    q.append(batches[12])
    q.max_bytes = big  # and the next one evicts it
    q.append(chain.next("data", tags=["x.y"]))
    drops = q.pending_drops()
    q.close()

    assert all(d.reason == "cap" for d in drops)
    seqs = [s for d in drops for s in range(d.first_seq, d.last_seq + 1)]
    assert seqs == sorted(set(seqs))
    assert seqs == list(range(1, seqs[-1] + 1))
    assert len(drops) > 1
    assert all(len(d.tags) <= RECORD_TAGS for d in drops if d.first_seq != 13)
    assert {t for d in drops for t in d.tags} == {t for s in seqs for t in tags_of[s - 1]}
    (big,) = [d for d in drops if 13 in range(d.first_seq, d.last_seq + 1)]
    assert (big.first_seq, big.last_seq, len(big.tags)) == (13, 13, RECORD_TAGS + 500)
