"""The signed ack codec (agent.protocol.acks): what the archive signs the gateway opens, runs follow the hash
chain, and no input makes open_ack raise anything but WireFormatError or SignatureError."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.core.errors import SignatureError, WireFormatError
from agent.protocol import acks
from agent.protocol.signing import BatchSigner, TrustStore
from tests.fuzzing import FUZZ_EXAMPLES

ARCHIVE = BatchSigner(Ed25519PrivateKey.generate())
KEYS = TrustStore()
KEYS.add(ARCHIVE.public_raw)


def _h(n: int) -> bytes:
    return n.to_bytes(32, "big")


def test_an_ack_opens_to_the_runs_it_was_signed_with() -> None:
    """encode_ack then open_ack gives back the gateway, the runs sorted by first, the issued time and the kid."""
    runs = [acks.AckRange(7, 9, _h(9)), acks.AckRange(1, 4, _h(4))]

    ack = acks.open_ack(acks.encode_ack(ARCHIVE, gw="gw1", ranges=runs, issued=123), KEYS, gateway="gw1")

    assert ack == acks.Ack("gw1", (runs[1], runs[0]), 123, ARCHIVE.kid)


def test_an_ack_for_another_gateway_is_unverified_not_malformed() -> None:
    """A genuine ack of gw2 replayed on gw1's topic is refused as a SignatureError: it is not the archive's
    word about gw1."""
    payload = acks.encode_ack(ARCHIVE, gw="gw2", ranges=[acks.AckRange(1, 1, _h(1))], issued=1)

    with pytest.raises(SignatureError):
        acks.open_ack(payload, KEYS, gateway="gw1")


def test_an_ack_whose_signed_map_repeats_a_key_is_malformed() -> None:
    """A signed map naming "gw" twice is refused before its signature is checked, whichever copy a decoder
    would keep; unknown keys alone are ignored."""
    good = msgpack.packb({"type": "ack", "v": 2, "gw": "gw1", "ranges": [], "issued": 1, "alg": ARCHIVE.alg,
                          "kid": ARCHIVE.kid, "later": 1}, use_bin_type=True)
    assert acks.open_ack(msgpack.packb([2, good, ARCHIVE.sign(good)], use_bin_type=True), KEYS,
                         gateway="gw1").ranges == ()
    repeated = bytes([good[0] + 1]) + good[1:] + msgpack.packb("gw") + msgpack.packb("gw2")

    with pytest.raises(WireFormatError):
        acks.open_ack(msgpack.packb([2, repeated, ARCHIVE.sign(repeated)], use_bin_type=True), KEYS,
                      gateway="gw1")


def test_linked_ranges_break_where_the_chain_does() -> None:
    """Consecutive seqs join a run only when prev links to the earlier hash; a gap or a broken link starts a
    new run, and each run names its last hash."""
    batches = [(1, _h(1), _h(0)), (2, _h(2), _h(1)), (3, _h(3), _h(99)), (5, _h(5), _h(4)), (2, _h(77), _h(1))]

    assert acks.linked_ranges(batches) == [acks.AckRange(1, 2, _h(2)), acks.AckRange(3, 3, _h(3)),
                                           acks.AckRange(5, 5, _h(5))]


def test_encode_refuses_more_ranges_than_one_message_holds() -> None:
    runs = [acks.AckRange(s, s, _h(s)) for s in range(1, 2 * acks.MAX_ACK_RANGES + 3, 2)]

    with pytest.raises(ValueError, match="ranges in one ack"):
        acks.encode_ack(ARCHIVE, gw="gw1", ranges=runs, issued=1)


def _opened_or_refused(payload: bytes) -> acks.Ack | None:
    try:
        return acks.open_ack(payload, KEYS, gateway="gw1")
    except (WireFormatError, SignatureError):
        return None


@pytest.mark.fuzz
@settings(max_examples=FUZZ_EXAMPLES, deadline=None)
@given(st.binary(max_size=2048))
def test_fuzz_open_ack_with_arbitrary_bytes_only_refuses(payload: bytes) -> None:
    """Random bytes are refused with one of the two documented errors (a valid ack by chance is fine)."""
    _opened_or_refused(payload)


_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=20) | st.binary(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)
_range_rows = st.lists(st.one_of(
    st.tuples(st.integers(1, 50), st.integers(0, 5)).map(lambda t: [t[0], t[0] + t[1], _h(t[0] + t[1])]),
    st.lists(_values, max_size=4),
), max_size=8)


@pytest.mark.fuzz
@settings(max_examples=FUZZ_EXAMPLES, deadline=None)
@given(
    ranges=st.one_of(_range_rows, _values),
    overrides=st.dictionaries(st.sampled_from(["type", "v", "gw", "issued", "alg", "kid", "extra"]), _values,
                              max_size=3),
)
def test_fuzz_open_ack_of_archive_signed_documents_checks_every_value(ranges: Any, overrides: dict[str, Any]) -> None:
    """Documents signed with the archive key but holding any values: open_ack either refuses them with the
    two documented errors or returns runs that are valid, sorted and disjoint, for this gateway."""
    doc = {"type": "ack", "v": 2, "gw": "gw1", "ranges": ranges, "issued": 1, "alg": "ed25519", "kid": ARCHIVE.kid,
           **overrides}
    signed = msgpack.packb(doc, use_bin_type=True)
    ack = _opened_or_refused(msgpack.packb([2, signed, ARCHIVE.sign(signed)], use_bin_type=True))

    if ack is not None:
        assert ack.gw == "gw1"
        previous_last = 0
        for r in ack.ranges:
            assert type(r.first) is int
            assert type(r.last) is int
            assert previous_last < r.first <= r.last <= acks.MAX_SEQ
            assert isinstance(r.last_hash, bytes)
            assert len(r.last_hash) == 32
            previous_last = r.last


def test_the_documented_ack_example_is_what_the_code_produces_and_opens() -> None:
    """docs/protocol.md §7.4 equals a fresh rendering, and its payload opens with its documented key into its
    documented runs."""
    from tests.protocol.ack_example import DOC, GW, archive_signer, documented_block, example_ack, example_runs, render

    keys = TrustStore()
    keys.add(archive_signer().public_raw)

    assert documented_block(DOC.read_text()) == render(), "run: python3 -m tests.protocol.ack_example"
    assert acks.open_ack(example_ack(), keys, gateway=GW).ranges == tuple(example_runs())
