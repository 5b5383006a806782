"""A Hypothesis state machine checks the DiskQueue against a plain in-memory model of the queue.

The model predicts exactly which batches are stored after any sequence of appends (with evictions or
refusals), acks, gap declarations, reopenings, cap changes and free-disk changes, and every seq ever appended
is accounted for exactly once: stored, acked, pending in a drop record, or declared by a gap batch. No gap
or catalog batch is ever evicted: each one appended is stored until it is acknowledged.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from agent.core.errors import BufferFull
from agent.protocol import wire
from buffer import EVICTION_ORDER, NEVER_EVICTED, ROW_OVERHEAD, DiskQueue, QueuedBatch
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
        self.never_evicted: set[int] = set()  # seqs of gap and catalog batches appended
        self.refused = 0
        self.disk = {"free": 1 << 40}  # 0: a full disk, on which nothing fits (the WAL reserve is missing)

    def _open(self) -> DiskQueue:
        q = DiskQueue(self.dir / "b.sqlite", max_bytes=self.cap, frame_tags=wire.frame_tags, sync="normal",
                      min_free_bytes=0, free_disk=lambda _: self.disk["free"], disk_size=lambda _: 1 << 40)
        q.open()
        return q

    def teardown(self) -> None:
        self.q.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def _limit(self) -> int:
        return self.cap if self.disk["free"] else 0

    def _evict(self) -> None:
        live = sum(size for _, size in self.stored.values())
        order = sorted((s for s in self.stored if self.stored[s][0] in PRIORITY),
                       key=lambda s: (PRIORITY[self.stored[s][0]], s))
        for seq in order:
            if live <= self._limit():
                break
            live -= self.stored.pop(seq)[1]

    def _fits(self, b: QueuedBatch) -> bool:
        """The model's refusal rule: the batches never evicted and this one must fit the limit."""
        kept = sum(size for kind, size in self.stored.values() if kind in NEVER_EVICTED)
        return kept + len(b.frame) + ROW_OVERHEAD <= self._limit()

    def _store(self, b: QueuedBatch, declares: list[int]) -> bool:
        """Append ``b``; True if stored, False if refused as the model predicts (the chain is then rewound)."""
        prev = self.q.chain_head()[1]
        if not self._fits(b):
            with pytest.raises(BufferFull):
                self.q.append(b, declares=declares)
            self.refused += 1
            self.chain.seq, self.chain.prev = b.seq - 1, prev
            return False
        self.q.append(b, declares=declares)
        self.stored[b.seq] = (b.kind, len(b.frame) + ROW_OVERHEAD)
        if b.kind in NEVER_EVICTED:
            self.never_evicted.add(b.seq)
        self._evict()
        return True

    @rule(kind=st.sampled_from(["data", "data", "data", "alarm", "gap", "catalog"]), padding=st.integers(0, 6000))
    def append(self, kind: str, padding: int) -> None:
        self._store(self.chain.next(kind, padding=padding), [])

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
        if self._store(self.chain.next("gap"), [d.id for d in drops]):
            for d in drops:
                self.declared |= set(range(d.first_seq, d.last_seq + 1))

    @rule(full=st.booleans())
    def disk_fills_or_frees(self, full: bool) -> None:
        """The file system fills up (nothing fits, not even the WAL reserve) or gets space back."""
        self.disk["free"] = 0 if full else 1 << 40

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
    def no_gap_or_catalog_batch_is_ever_evicted(self) -> None:
        assert self.never_evicted <= set(self.stored) | self.acked
        assert {s for s, (kind, _) in self.stored.items() if kind in NEVER_EVICTED} <= self.never_evicted

    @invariant()
    def chain_head_is_the_last_append(self) -> None:
        assert self.q.chain_head() == (self.chain.seq, self.chain.prev)

    @invariant()
    def stats_agree(self) -> None:
        s = self.q.stats()
        assert (s.batches, s.bytes) == (len(self.stored), sum(size for _, size in self.stored.values()))
        if self.disk["free"]:  # refusals are counted since open (a reopen starts from zero)
            assert s.refused <= self.refused


QueueModel.TestCase.settings = settings(max_examples=15, stateful_step_count=25, deadline=None,
                                        suppress_health_check=[HealthCheck.too_slow])
test_queue_matches_model = pytest.mark.slow(QueueModel.TestCase)  # ~10 s on a loaded machine
