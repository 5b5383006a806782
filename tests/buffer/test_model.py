"""A Hypothesis state machine checks the DiskQueue against a plain in-memory model of the queue.

The model predicts exactly which batches are stored after any sequence of appends (with evictions), acks,
gap declarations, reopenings and cap changes, and every seq ever appended is accounted for exactly once:
stored, acked, pending in a drop record, or declared by a gap batch.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from agent.protocol import wire
from buffer import EVICTION_ORDER, ROW_OVERHEAD, DiskQueue
from tests.buffer.frames import ChainMaker

PRIORITY = {kind: i for i, kind in enumerate(EVICTION_ORDER)}


class QueueModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="buffer-model-"))
        self.cap = 30_000
        self.q = self._open()
        self.chain = ChainMaker()
        self.stored: dict[int, tuple[str, int]] = {}  # seq -> (kind, size)
        self.acked: set[int] = set()
        self.declared: set[int] = set()

    def _open(self) -> DiskQueue:
        q = DiskQueue(self.dir / "b.sqlite", max_bytes=self.cap, frame_tags=wire.frame_tags, sync="normal",
                      min_free_bytes=0, free_disk=lambda _: 1 << 40)
        q.open()
        return q

    def teardown(self) -> None:
        self.q.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def _evict(self) -> None:
        live = sum(size for _, size in self.stored.values())
        order = sorted(self.stored, key=lambda s: (PRIORITY[self.stored[s][0]], s))
        for seq in order:
            if live <= self.cap:
                break
            live -= self.stored.pop(seq)[1]

    @rule(kind=st.sampled_from(["data", "data", "data", "alarm", "gap"]), padding=st.integers(0, 6000))
    def append(self, kind: str, padding: int) -> None:
        b = self.chain.next(kind, padding=padding)
        self.q.append(b)
        self.stored[b.seq] = (kind, len(b.frame) + ROW_OVERHEAD)
        self._evict()

    @precondition(lambda self: self.stored)
    @rule(data=st.data())
    def ack(self, data: st.DataObject) -> None:
        seqs = data.draw(st.sets(st.sampled_from(sorted(self.stored))))
        extra = data.draw(st.sets(st.integers(1, self.chain.seq + 5), max_size=3))
        expected = len(seqs)
        for s in seqs:
            del self.stored[s]
        self.acked |= seqs
        present = {s for s in extra if s in self.stored}
        for s in present:
            del self.stored[s]
        self.acked |= present

        assert self.q.ack(seqs | extra) == expected + len(present)

    @rule()
    def declare_pending_drops(self) -> None:
        drops = self.q.pending_drops()
        if not drops:
            return
        b = self.chain.next("gap")
        self.q.append(b, declares=[d.id for d in drops])
        for d in drops:
            self.declared |= set(range(d.first_seq, d.last_seq + 1))
        self.stored[b.seq] = ("gap", len(b.frame) + ROW_OVERHEAD)
        self._evict()

    @rule()
    def reopen(self) -> None:
        self.q.close()
        self.q = self._open()

    @rule()
    def crash_and_reopen(self) -> None:
        """A process crash (no close): same boot, so nothing may be declared lost that was not."""
        self.q._conn = None
        self.q._unlock()
        self.q = self._open()

    @rule(cap=st.integers(8_000, 60_000))
    def change_cap(self, cap: int) -> None:
        """A new max_bytes takes effect at the next append (as after a config reload and reopen)."""
        self.cap = cap
        self.q.close()
        self.q = self._open()

    @invariant()
    def stored_batches_match_the_model(self) -> None:
        assert [b.seq for b in self.q.peek(10_000)] == sorted(self.stored)

    @invariant()
    def every_seq_is_accounted_for_exactly_once(self) -> None:
        pending: list[int] = []
        for d in self.q.pending_drops():
            pending.extend(range(d.first_seq, d.last_seq + 1))
        # pending_drops() freezes records; harmless here, since the model does not depend on merging.
        parts = [set(self.stored), self.acked, set(pending), self.declared]
        assert sum(len(p) for p in parts) == self.chain.seq
        assert set().union(*parts) == set(range(1, self.chain.seq + 1))

    @invariant()
    def chain_head_is_the_last_append(self) -> None:
        assert self.q.chain_head() == (self.chain.seq, self.chain.prev)

    @invariant()
    def stats_agree(self) -> None:
        s = self.q.stats()
        assert (s.batches, s.bytes) == (len(self.stored), sum(size for _, size in self.stored.values()))


QueueModel.TestCase.settings = settings(max_examples=15, stateful_step_count=25, deadline=None,
                                        suppress_health_check=[HealthCheck.too_slow])
test_queue_matches_model = pytest.mark.slow(QueueModel.TestCase)  # ~10 s on a loaded machine
