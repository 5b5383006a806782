"""DiskQueue semantics: append, peek, ack, chain head, caps and drop records."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.core.errors import BufferStoreError, WireFormatError
from agent.protocol import wire
from buffer import ROW_OVERHEAD, DiskQueue, QueuedBatch
from tests.buffer.frames import ChainMaker

PLENTY_OF_DISK = 1 << 40


def _free(_: Path) -> int:
    return PLENTY_OF_DISK


@pytest.fixture
def store(tmp_path: Path) -> Iterator[DiskQueue]:
    q = DiskQueue(tmp_path / "buffer.sqlite", max_bytes=64 << 20, frame_tags=wire.frame_tags, free_disk=_free)
    q.open()
    yield q
    q.close()


def _fill(q: DiskQueue, chain: ChainMaker, kinds: str) -> list[QueuedBatch]:
    """Append one batch per letter: d = data, a = alarm, g = gap."""
    out = []
    for letter in kinds:
        b = chain.next({"d": "data", "a": "alarm", "g": "gap"}[letter])
        q.append(b)
        out.append(b)
    return out


def test_new_store_has_genesis_chain_head(store: DiskQueue) -> None:
    """A new store starts the chain at seq 0 with the genesis hash."""
    assert store.chain_head() == (0, wire.GENESIS_HASH)


def test_append_then_peek_returns_frames_byte_for_byte_oldest_first(store: DiskQueue) -> None:
    """Peek returns the stored batches unchanged, in seq order, without removing them."""
    batches = _fill(store, ChainMaker(), "dad")

    assert store.peek(10) == batches
    assert store.peek(10) == batches


def test_peek_is_bounded_by_limit_and_filters(store: DiskQueue) -> None:
    """Peek honours limit, kinds, newest_first and exclude."""
    b = _fill(store, ChainMaker(), "dadga")

    assert [x.seq for x in store.peek(2)] == [1, 2]
    assert [x.seq for x in store.peek(10, kinds=["alarm"])] == [2, 5]
    assert [x.seq for x in store.peek(2, newest_first=True)] == [5, 4]
    assert [x.seq for x in store.peek(10, exclude=[1, 2])] == [3, 4, 5]
    assert [x.seq for x in store.peek(10, kinds=["data", "gap"], exclude={3})] == [1, 4]
    assert store.peek(10, kinds=[]) == []
    assert len(b) == 5


def test_ack_deletes_and_counts_only_present_batches(store: DiskQueue) -> None:
    """Ack removes the given seqs and returns how many were there; acking again is harmless."""
    _fill(store, ChainMaker(), "ddd")

    assert store.ack([1, 3, 99]) == 2
    assert store.ack([1]) == 0
    assert [x.seq for x in store.peek(10)] == [2]
    assert (store.stats().acked, store.stats().batches) == (2, 1)


def test_chain_head_survives_ack_and_reopen(tmp_path: Path) -> None:
    """The chain head is the last appended batch even after everything is acked and the store reopened."""
    path = tmp_path / "b.sqlite"
    q = DiskQueue(path, max_bytes=1 << 20, frame_tags=wire.frame_tags, free_disk=_free)
    q.open()
    last = _fill(q, ChainMaker(), "ddd")[-1]
    q.ack([1, 2, 3])
    q.close()
    path.with_name(path.name + ".head").unlink()  # only the database's copy remains
    q = DiskQueue(path, max_bytes=1 << 20, frame_tags=wire.frame_tags, free_disk=_free)
    q.open()

    assert q.chain_head() == (3, last.hash)
    assert q.stats().batches == 0
    q.close()


def test_seq_must_follow_the_head(store: DiskQueue) -> None:
    """An append whose seq is not head+1 is refused and changes nothing."""
    chain = ChainMaker()
    _fill(store, chain, "d")
    chain.next()  # skip seq 2
    skipped = chain.next()

    with pytest.raises(BufferStoreError, match="does not follow the chain head 1") as info:
        store.append(skipped)
    assert not info.value.recoverable
    assert store.chain_head()[0] == 1
    assert store.stats().batches == 1


def test_repeated_seq_is_refused(store: DiskQueue) -> None:
    """Appending the same seq twice is refused: the sequence never repeats."""
    (b,) = _fill(store, ChainMaker(), "d")

    with pytest.raises(BufferStoreError):
        store.append(b)


def test_unknown_kind_is_refused(store: DiskQueue) -> None:
    """Only data, alarm and gap batches are stored."""
    b = ChainMaker().next()
    odd = QueuedBatch(b.seq, "metrics", b.created_ms, b.t0_ms, b.t1_ms, b.records, b.hash, b.frame)

    with pytest.raises(BufferStoreError, match="unknown batch kind"):
        store.append(odd)


def test_cap_evicts_oldest_data_and_records_a_drop(tmp_path: Path) -> None:
    """At the byte cap the oldest data batches go first, counted in one DropRecord with their tags."""
    chain = ChainMaker()
    batches = [chain.next(tags=[f"plc1.t{i}"], padding=1000) for i in range(1, 6)]
    per = len(batches[0].frame) + ROW_OVERHEAD
    q = DiskQueue(tmp_path / "b.sqlite", max_bytes=per * 3 + per // 2, frame_tags=wire.frame_tags, free_disk=_free)
    q.open()
    for b in batches:
        q.append(b)

    assert [x.seq for x in q.peek(10)] == [3, 4, 5]
    (drop,) = q.pending_drops()
    assert (drop.first_seq, drop.last_seq, drop.batches, drop.reason) == (1, 2, 2, "cap")
    assert drop.records == batches[0].records + batches[1].records
    assert (drop.from_ms, drop.to_ms) == (batches[0].t0_ms, batches[1].t1_ms)
    assert drop.tags == ["plc1.t1", "plc1.t2"]
    assert drop.bytes == sum(len(b.frame) + ROW_OVERHEAD for b in batches[:2])
    s = q.stats()
    assert (s.dropped_batches, s.drops_by_reason, s.bytes <= q.max_bytes) == (2, {"cap": 2}, True)
    q.close()


def test_an_evicted_frame_that_does_not_decode_is_counted_without_tag_names(tmp_path: Path) -> None:
    """frame_tags raising WireFormatError for one evicted frame leaves only that frame's names out of the drop."""
    chain = ChainMaker()
    batches = [chain.next(tags=[f"plc1.t{i}"], padding=1000) for i in range(1, 6)]
    undecodable = batches[0].frame
    seen: list[bytes] = []

    def frame_tags(frame: bytes) -> frozenset[str]:
        seen.append(frame)
        if frame == undecodable:
            raise WireFormatError("a frame this function cannot read")
        return wire.frame_tags(frame)

    per = len(batches[0].frame) + ROW_OVERHEAD
    q = DiskQueue(tmp_path / "b.sqlite", max_bytes=per * 3 + per // 2, frame_tags=frame_tags, free_disk=_free)
    q.open()
    for b in batches:
        q.append(b)

    (drop,) = q.pending_drops()
    assert (drop.first_seq, drop.last_seq, drop.batches, drop.reason) == (1, 2, 2, "cap")
    assert drop.records == batches[0].records + batches[1].records
    assert drop.tags == ["plc1.t2"]
    assert seen == [batches[0].frame, batches[1].frame]  # called for evicted frames only, as appended
    assert q.stats().dropped_batches == 2
    q.close()


def test_cap_evicts_data_before_gap_before_alarm(tmp_path: Path) -> None:
    """Eviction order is by priority first (data, gap, alarm), then age; non-contiguous runs are separate."""
    chain = ChainMaker()
    batches = [chain.next(k, padding=1000) for k in ["alarm", "data", "gap", "data", "alarm", "data"]]
    per = max(len(b.frame) for b in batches) + ROW_OVERHEAD
    q = DiskQueue(tmp_path / "b.sqlite", max_bytes=per * 6, frame_tags=wire.frame_tags, free_disk=_free)
    q.open()
    for b in batches:
        q.append(b)
    q.max_bytes = per * 3  # tighten the cap: the next append must evict three data batches and more

    q.append(chain.next("alarm", padding=1000))

    assert [(x.seq, x.kind) for x in q.peek(10)] == [(1, "alarm"), (5, "alarm"), (7, "alarm")]
    drops = [(d.first_seq, d.last_seq, d.batches) for d in q.pending_drops()]
    assert drops == [(2, 4, 3), (6, 6, 1)]
    q.close()


def test_gap_batch_declaring_drops_deletes_them_atomically(tmp_path: Path) -> None:
    """Appending a gap batch with declares=[ids] removes exactly those pending drops."""
    chain = ChainMaker()
    first = chain.next(padding=1000)
    per = len(first.frame) + ROW_OVERHEAD
    q = DiskQueue(tmp_path / "b.sqlite", max_bytes=per * 3 + per // 2,  # room for the gap
                  frame_tags=wire.frame_tags, free_disk=_free)
    q.open()
    q.append(first)
    for _ in range(3):
        q.append(chain.next(padding=1000))
    (drop,) = q.pending_drops()

    q.append(chain.next("gap"), declares=[drop.id])

    assert q.pending_drops() == []
    assert q.chain_head()[0] == 5
    q.close()


def test_declaring_an_unknown_drop_is_refused_and_nothing_is_stored(store: DiskQueue) -> None:
    """A gap batch naming a drop id that is not pending is refused; the head does not move."""
    chain = ChainMaker()
    _fill(store, chain, "d")

    with pytest.raises(BufferStoreError, match="pending"):
        store.append(chain.next("gap"), declares=[42])
    assert store.chain_head()[0] == 1
    assert store.stats().batches == 1


def test_drops_returned_by_pending_drops_are_not_extended(tmp_path: Path) -> None:
    """A drop record already handed to the batcher is frozen; later evictions start a new record."""
    chain = ChainMaker()
    first = chain.next(padding=1000)
    per = len(first.frame) + ROW_OVERHEAD
    q = DiskQueue(tmp_path / "b.sqlite", max_bytes=per * 2, frame_tags=wire.frame_tags, free_disk=_free)
    q.open()
    q.append(first)
    q.append(chain.next(padding=1000))
    q.append(chain.next(padding=1000))  # evicts 1
    q.append(chain.next(padding=1000))  # evicts 2, extends the record
    seen = q.pending_drops()
    q.append(chain.next(padding=1000))  # evicts 3: a new record

    assert [(d.first_seq, d.last_seq) for d in seen] == [(1, 2)]
    assert [(d.first_seq, d.last_seq) for d in q.pending_drops()] == [(1, 2), (3, 3)]
    q.close()


def test_batch_larger_than_cap_is_refused(tmp_path: Path) -> None:
    """A frame that could never fit is a configuration problem, reported as such."""
    q = DiskQueue(tmp_path / "b.sqlite", max_bytes=1000, frame_tags=wire.frame_tags, free_disk=_free)
    q.open()

    with pytest.raises(BufferStoreError, match=r"buffer\.max_bytes"):
        q.append(ChainMaker().next(padding=2000))
    q.close()


def test_low_disk_evicts_with_reason_disk_low(tmp_path: Path) -> None:
    """With free disk below min_free_bytes (no room for the WAL either) all is shed, counted as disk_low."""
    free = {"bytes": PLENTY_OF_DISK}
    q = DiskQueue(tmp_path / "b.sqlite", max_bytes=1 << 30, frame_tags=wire.frame_tags, min_free_bytes=1 << 20,
                  free_disk=lambda _: free["bytes"])
    q.open()
    chain = ChainMaker()
    for _ in range(4):
        q.append(chain.next(padding=1000))
    free["bytes"] = (1 << 20) - 1  # below the watermark, and the file has no free pages to reuse

    q.append(chain.next(padding=1000))

    s = q.stats()
    assert s.drops_by_reason == {"disk_low": 5}
    assert q.peek(10) == []
    assert [(d.first_seq, d.last_seq, d.reason) for d in q.pending_drops()] == [(1, 5, "disk_low")]
    assert q.chain_head()[0] == 5  # the head still advanced: the loss is declared, not hidden
    q.close()


def test_stats_report_backlog_and_totals(store: DiskQueue) -> None:
    """Stats count batches and bytes per kind, the oldest batch, and appended/acked totals."""
    b = _fill(store, ChainMaker(), "dag")
    store.ack([3])

    s = store.stats()
    assert (s.batches, s.by_kind, s.appended, s.acked, s.head_seq) == (
        2, {"data": 1, "alarm": 1, "gap": 0, "catalog": 0}, 3, 1, 3)
    assert s.bytes == len(b[0].frame) + len(b[1].frame) + 2 * ROW_OVERHEAD
    assert s.oldest_created_ms == b[0].created_ms
    assert s.oldest_age_ms(b[0].created_ms + 5000) == 5000


def test_store_uses_wal_and_incremental_auto_vacuum(store: DiskQueue) -> None:
    """The pragmas the durability argument rests on are in effect."""
    conn = store._db()

    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA auto_vacuum").fetchone()[0] == 2
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2


def test_unknown_sync_policy_is_a_config_error(tmp_path: Path) -> None:
    """A typo in buffer.sync names the key and the allowed values."""
    with pytest.raises(BufferStoreError, match="unknown sync policy 'fsync'") as info:
        DiskQueue(tmp_path / "b.sqlite", max_bytes=1 << 20, frame_tags=wire.frame_tags, sync="fsync")
    assert info.value.key == "buffer.sync"


def test_ack_of_a_huge_range_deletes_only_what_is_stored(store: DiskQueue) -> None:
    """An end-to-end ack range far larger than the backlog is one cheap delete of the stored part."""
    _fill(store, ChainMaker(), "ddddd")

    assert store.ack(range(2, 10_000_000_000)) == 4
    assert store.ack(range(5, 5)) == 0
    assert [b.seq for b in store.peek(10)] == [1]
