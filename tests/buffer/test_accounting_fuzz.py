"""Fuzzing the loss accounting under disk pressure: random appends of every kind, acks, declarations,
reopenings and free-disk figures anywhere around the watermark.

Unlike tests/buffer/test_model.py, nothing here predicts which batch is evicted (that depends on the WAL's
size); it checks what must hold whatever the store decides: every seq ever appended is acknowledged, still
queued, or in exactly one declaration (a pending drop record or a stored gap batch's rows); no gap or catalog
batch is ever evicted; a refused append changes nothing.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from agent.core.errors import BufferFull
from agent.protocol import wire
from buffer import NEVER_EVICTED, DiskQueue, QueuedBatch
from tests.buffer.frames import ChainMaker
from tests.fuzzing import FUZZ_EXAMPLES

MIB = 1 << 20
WATERMARK = 2 * MIB


class Accounting(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="buffer-accounting-"))
        self.free = 1 << 40
        self.q = self._open()
        self.chain = ChainMaker()
        self.kinds: dict[int, str] = {}  # every seq appended -> its kind
        self.acked: set[int] = set()
        self.declared: set[int] = set()

    def _open(self) -> DiskQueue:
        q = DiskQueue(self.dir / "b.sqlite", max_bytes=40_000, frame_tags=wire.frame_tags, sync="normal",
                      min_free_bytes=WATERMARK, free_disk=lambda _: self.free, disk_size=lambda _: 1 << 40)
        q.open()
        return q

    def teardown(self) -> None:
        self.q.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def _stored(self) -> dict[int, str]:
        return {b.seq: b.kind for b in self.q.peek(100_000)}

    def _append(self, b: QueuedBatch, declares: list[int]) -> bool:
        head = self.q.chain_head()
        before = self._stored()
        pending = self.q.pending_drops()
        try:
            self.q.append(b, declares=declares)
        except BufferFull:
            # Nothing changed: head, stored batches, pending records (their ids and ranges).
            assert self.q.chain_head() == head
            assert self._stored() == before
            assert [(d.id, d.first_seq, d.last_seq) for d in self.q.pending_drops()] == [
                (d.id, d.first_seq, d.last_seq) for d in pending]
            self.chain.seq, self.chain.prev = head
            return False
        self.kinds[b.seq] = b.kind
        return True

    @rule(kind=st.sampled_from(["data", "data", "data", "alarm", "gap", "catalog"]), padding=st.integers(0, 5000))
    def append(self, kind: str, padding: int) -> None:
        self._append(self.chain.next(kind, padding=padding), [])

    @rule()
    def declare(self) -> None:
        drops = self.q.pending_drops()
        if drops and self._append(self.chain.next("gap"), [d.id for d in drops]):
            for d in drops:
                self.declared |= set(range(d.first_seq, d.last_seq + 1))

    @rule(data=st.data())
    def ack(self, data: st.DataObject) -> None:
        stored = sorted(self._stored())
        seqs = data.draw(st.sets(st.sampled_from(stored))) if stored else set()
        extra = data.draw(st.sets(st.integers(1, self.chain.seq + 3), max_size=3))
        present = (seqs | extra) & set(stored)
        assert self.q.ack(seqs | extra) == len(present)
        self.acked |= present

    @rule(free=st.one_of(st.just(1 << 40), st.integers(0, WATERMARK + 8 * MIB)))
    def free_disk(self, free: int) -> None:
        self.free = free

    @rule()
    def crash_and_reopen(self) -> None:
        self.q._conn = None
        self.q._unlock()
        self.q = self._open()

    @invariant()
    def every_seq_is_acked_queued_or_declared_exactly_once(self) -> None:
        pending: list[int] = []
        for d in self.q.pending_drops():
            pending.extend(range(d.first_seq, d.last_seq + 1))
        parts = [set(self._stored()), self.acked, set(pending), self.declared]
        assert sum(len(p) for p in parts) == self.chain.seq
        assert set().union(*parts) == set(range(1, self.chain.seq + 1))

    @invariant()
    def no_gap_or_catalog_batch_is_ever_evicted(self) -> None:
        stored = set(self._stored())
        kept = {s for s, kind in self.kinds.items() if kind in NEVER_EVICTED}
        assert kept <= stored | self.acked

    @invariant()
    def the_head_is_the_last_append(self) -> None:
        assert self.q.chain_head() == (self.chain.seq, self.chain.prev)


Accounting.TestCase.settings = settings(max_examples=max(10, FUZZ_EXAMPLES // 10), stateful_step_count=30,
                                        deadline=None, suppress_health_check=[HealthCheck.too_slow])
test_loss_accounting_under_disk_pressure = pytest.mark.fuzz(Accounting.TestCase)
