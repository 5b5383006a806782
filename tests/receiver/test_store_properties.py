"""Property: whatever the arrival order, duplication and loss, the report accounts for every seq exactly."""

from __future__ import annotations

import tempfile
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.protocol.signing import BatchSigner
from backend.receiver import ReceiverStore, coalesce
from tests.receiver.chain import Chain, register

SIGNER = BatchSigner(Ed25519PrivateKey.generate())
_chain = Chain(SIGNER)
FRAMES = [_chain.data(rows=1).frame for _ in range(30)]  # signing is the slow part: make them once


@st.composite
def deliveries(draw: st.DrawFn) -> tuple[int, set[int], list[int]]:
    """(chain length, seqs lost, arrival order of the delivered seqs with duplicates)."""
    n = draw(st.integers(1, len(FRAMES)))
    lost = draw(st.sets(st.integers(1, n - 1), max_size=n - 1)) if n > 1 else set()
    delivered = [s for s in range(1, n + 1) if s not in lost]  # the last one always arrives
    extra = draw(st.lists(st.sampled_from(delivered), max_size=10))
    order = draw(st.permutations(delivered + extra))
    return n, lost, order


@settings(max_examples=40, deadline=None)
@given(deliveries())
def test_report_accounts_for_every_seq_in_any_order(case: tuple[int, set[int], list[int]]) -> None:
    """Stored + missing covers 1..n exactly, duplicates are counted, and an intact chain never breaks."""
    n, lost, order = case
    with tempfile.TemporaryDirectory() as d, ReceiverStore(Path(d) / "r.sqlite") as store:
        register(store, SIGNER)
        store.ingest_many([(FRAMES[s - 1], "gw-01", "data") for s in order])
        report = store.report()["gateways"]["gw-01"]

    assert report["missing"] == coalesce(lost)
    stored = n - len(lost)
    assert (report["batches"], report["duplicates"], report["last_seq"]) == (stored, len(order) - stored, n)
    assert report["chain_breaks"] == []
