"""Gap batches always fit the protocol's bounds: however many drop records and collection gaps are pending,
and however many tags each names, the batcher makes gap batches a receiver accepts, each record declared in
exactly one of them. A refused gap batch would never be acknowledged and, never evicted, never leave."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.batcher import ROW_TAGS, Batcher, GapBatch, gap_batches
from agent.core.clock import FakeClock
from agent.pipeline.pipeline import PipelineOutput
from agent.protocol import wire
from agent.protocol.limits import MAX_TAG_CHARS
from agent.protocol.signing import BatchSigner, generate_key
from agent.protocol.tables import GAP_COLUMNS, GAP_TABLE, OUTAGE_COLUMNS, OUTAGE_TABLE
from agent.protocol.wire import decode_body, frame_tags, open_frame
from backend.receiver import ReceiverStore
from buffer import ROW_OVERHEAD, AsyncDiskQueue, DropRecord
from tests.buffer.test_crash import run_and_kill
from tests.fuzzing import FUZZ_EXAMPLES
from tests.receiver.chain import register

T0 = 1_800_000_000_000
SIGNER = BatchSigner(Ed25519PrivateKey.generate())


def _tags(count: int, length: int, prefix: str = "d") -> list[str]:
    """``count`` distinct sorted tag names of ``length`` characters (at least the digits they need)."""
    return [f"{prefix}.{i:0{max(length - len(prefix) - 1, 6)}d}" for i in range(count)]


def _drops(spec: list[tuple[int, int, int, bool]]) -> list[DropRecord]:
    """Records as the buffer keeps them: consecutive runs separated by kept seqs, ids ascending."""
    out, seq = [], 1
    for i, (batches, ntags, length, unknown) in enumerate(spec):
        first, last = seq, seq + batches - 1
        seq = last + 2  # one kept batch between runs
        times = (0, 0) if unknown else (T0 + i * 1000, T0 + i * 1000 + 999)
        out.append(DropRecord(i + 10, first, last, batches, 0 if unknown else batches * 60, *times,
                              batches * 1000, "lost" if unknown else "cap",
                              [] if unknown else _tags(ntags, length)))
    return out


def _outages(spec: list[tuple[int, int]]) -> list[list[Any]]:
    reasons = ["unclean_stop", "buffer_full", "disk_full", "store_error"]
    return [[T0 - 5000 + i, T0 + i, reasons[i], _tags(ntags, length, "o")]
            for i, (ntags, length) in enumerate(spec[:4])]


def _frames(parts: list[GapBatch], drops: list[DropRecord], enc: str) -> list[bytes]:
    """The gap batches signed and chained after the last seq the records name, as the batcher stores them."""
    seq = max((d.last_seq for d in drops), default=0)
    frames = []
    for part in parts:
        seq += 1
        body = wire.encode_body([], part.tables, part.t0, enc)
        frames.append(wire.encode_frame(SIGNER, gw="gw-A", seq=seq, prev=bytes(32), created=T0, t0=part.t0,
                                        t1=part.t1, kind="gap", enc=enc, body=body).frame)
    return frames


def _check(drops: list[DropRecord], outages: list[list[Any]], enc: str) -> list[bytes]:
    """Every gap batch opens and decodes as a receiver does; every record and outage appears exactly once,
    outages first, each row's tags the first ROW_TAGS sorted names and tags_omitted the rest."""
    parts = gap_batches(drops, outages)
    frames = _frames(parts, drops, enc)
    declared: list[int] = []
    gap_rows: list[list[Any]] = []
    outage_rows: list[list[Any]] = []
    for part, frame in zip(parts, frames, strict=True):
        batch = open_frame(frame)
        body = decode_body(batch)
        assert set(body.tables) <= {GAP_TABLE, OUTAGE_TABLE}
        rows = body.tables.get(GAP_TABLE, wire.Table(GAP_COLUMNS)).rows
        assert [r[0] for r in rows] == [d.first_seq for d in part.drops]
        assert all(r[1] < batch.seq for r in rows)  # a gap row declares only earlier seqs
        declared.extend(part.declares)
        gap_rows.extend(rows)
        outs = body.tables.get(OUTAGE_TABLE, wire.Table(OUTAGE_COLUMNS)).rows
        outage_rows.extend(outs)
        # The header's times enclose every known time of its rows (0: a loss of unknown content).
        times = [t for r in rows for t in r[4:6]] + [t for r in outs for t in r[:2]]
        assert all(batch.t0 <= t <= batch.t1 for t in times if t)
    assert declared == [d.id for d in drops]  # each record once, in order
    first_drops = next((i for i, p in enumerate(parts) if p.drops), len(parts))
    assert not any(p.outages for p in parts[first_drops + 1:])  # outages come first
    assert outage_rows == [[*o[:3], sorted(o[3])[:ROW_TAGS], max(0, len(o[3]) - ROW_TAGS)] for o in outages]
    assert gap_rows == [[d.first_seq, d.last_seq, d.batches, d.records, d.from_ms, d.to_ms, d.reason,
                         d.tags[:ROW_TAGS], max(0, len(d.tags) - ROW_TAGS)] for d in drops]
    return frames


_RUN = st.tuples(st.integers(1, 10_000), st.integers(0, 6000), st.integers(8, MAX_TAG_CHARS), st.booleans())


@pytest.mark.fuzz
@settings(max_examples=FUZZ_EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_RUN, max_size=12), st.lists(st.tuples(st.integers(0, 6000), st.integers(8, MAX_TAG_CHARS)),
                                            max_size=4),
       st.sampled_from(["zstd", "zlib", "none"]))
def test_fuzz_any_pending_drops_make_gap_batches_a_receiver_accepts(
        runs: list[tuple[int, int, int, bool]], outages: list[tuple[int, int]], enc: str) -> None:
    _check(_drops(runs), _outages(outages), enc)


@pytest.mark.parametrize(("case", "runs", "outages"), [
    ("nothing pending", [], []),
    ("an unclean stop alone", [], [(3, 20)]),
    ("one record of exactly ROW_TAGS tags", [(5, ROW_TAGS, 20, False)], []),
    ("one record of one tag more", [(5, ROW_TAGS + 1, 20, False)], []),
    ("the longest names, many tags, every outage", [(1, 6000, MAX_TAG_CHARS, False)] * 3,
     [(6000, MAX_TAG_CHARS)] * 4),
    ("9,000 runs of a 600-tag gateway", [(1, 600, 14, False)] * 9000, []),
    ("100,000 lost runs of unknown content", [(1, 0, 8, True)] * 100_000, []),
])
def test_gap_batches_within_bounds(case: str, runs: list[tuple[int, int, int, bool]],
                                   outages: list[tuple[int, int]]) -> None:
    """Scenarios at and beyond the bounds the receiver enforces, decoded as the receiver does."""
    frames = _check(_drops(runs), _outages(outages), "zstd")
    assert len(frames) <= len(runs) + len(outages)
    assert len(frames) <= 1 or max(map(len, frames)) > 1000  # split only when needed, not a batch per row


def test_the_receiver_archives_every_declaration_of_a_long_fragmented_outage() -> None:
    """Runs of a 600-tag gateway split over several gap batches (the 9,000 runs above, more than 5,000,000
    values together, only make more of them): every one is stored by the reference receiver, and every run
    is a declared gap."""
    drops = _drops([(1, 600, 14, False)] * 300)
    frames = _check(drops, [], "zstd")
    assert len(frames) > 1
    with ReceiverStore(":memory:") as store:
        register(store, SIGNER, "gw-A")
        results = [store.ingest(f, topic_gw="gw-A", topic_kind="gap") for f in frames]
        report = store.report()["gateways"]["gw-A"]
    assert {r.status for r in results} == {"stored"}
    assert all(r.ackable for r in results)
    assert [(g["first_seq"], g["last_seq"]) for g in report["declared_gaps"]] == [
        (d.first_seq, d.last_seq) for d in drops]


async def test_an_unclean_stop_of_a_large_gateway_declares_a_bounded_tag_list(tmp_path: Path) -> None:
    """Through the batcher and a real buffer: after a kill -9, a gateway of more tags than a row lists
    declares the collection gap with the first ROW_TAGS names and the count of the others."""
    path = tmp_path / "buffer.sqlite"
    run_and_kill(path, commits=3)
    tags = _tags(ROW_TAGS + 904, 30, "plc")
    queue = AsyncDiskQueue(path, max_bytes=1 << 30, frame_tags=frame_tags, min_free_bytes=0)
    await queue.open()
    try:
        head, _ = await queue.chain_head()
        batcher = Batcher("gw-test", generate_key(tmp_path / "key"), queue, outage_tags=tags, compression="none")
        await batcher.open()
        await batcher.submit(PipelineOutput(raw=[["plc.a", T0 + 5, 0.4, 0, None]]))
        stored = await queue.peek(10, exclude=range(1, head + 1))
    finally:
        await queue.close()
    assert [b.kind for b in stored] == ["gap", "data"]
    (row,) = decode_body(open_frame(stored[0].frame)).tables[OUTAGE_TABLE].rows
    assert row[2:] == ["unclean_stop", tags[:ROW_TAGS], 904]
    assert batcher.stats.gap_batches == 1
    assert batcher.stats.outages_declared == 1


async def test_a_long_outage_of_changing_tags_is_declared_once_through_a_real_buffer(tmp_path: Path) -> None:
    """Data batches of thousands of different tags evicted at the cap: records stop at RECORD_TAGS names, so
    their declaration takes several gap batches. Some are refused while the gap batches alone fill the cap;
    once the stored ones are delivered (acknowledged), the rest follow. In the end every evicted seq is in
    exactly one gap row of one gap batch that decodes as a receiver decodes it, and nothing is pending."""
    clock = FakeClock(T0 / 1000)

    def batch(k: int) -> PipelineOutput:
        return PipelineOutput(raw=[[f"plc{k}.{'x' * 90}{i:04d}", T0 + k * 1000 + i % 1000, float(i), 0, None]
                                   for i in range(3000)])

    signer = generate_key(tmp_path / "key")
    queue = AsyncDiskQueue(tmp_path / "b.sqlite", max_bytes=1 << 30, frame_tags=frame_tags, min_free_bytes=0)
    await queue.open()
    try:
        batcher = Batcher("gw-test", signer, queue, declare_interval_s=3600, clock=clock)
        await batcher.open()
        await batcher.submit(batch(0))
        (first,) = await queue.peek(1)
        per = len(first.frame) + ROW_OVERHEAD
        queue.queue.max_bytes = per * 3
        for k in range(1, 10):
            await batcher.submit(batch(k))
        evicted = (await queue.stats()).pending_drop_batches
        assert evicted >= 6
        assert len(await queue.pending_drops()) >= 3
        queue.queue.max_bytes = per  # room for a few gap batches only: the data goes, then the rest is refused

        rows: list[list[Any]] = []
        refused = False
        for _ in range(20):
            await batcher.flush(final=True)
            gaps = await queue.peek(100, kinds=["gap"])
            for g in gaps:
                body = decode_body(open_frame(g.frame))
                rows.extend(body.tables[GAP_TABLE].rows)
            await queue.ack([g.seq for g in gaps])
            refused = refused or batcher.stats.append_failures > 0
            if not await queue.pending_drops():
                break
        stats = await queue.stats()
    finally:
        await queue.close()
    assert batcher.stats.gap_batches > 1
    assert refused
    seqs = [s for r in rows for s in range(r[0], r[1] + 1)]
    assert len(seqs) == len(set(seqs)) == sum(r[2] for r in rows) == stats.dropped_batches
    assert stats.pending_drops == 0
    assert all(len(r[7]) <= ROW_TAGS for r in rows)
