"""The signed push format (agent.protocol.push): what passes, and every reason something does not."""

from __future__ import annotations

from pathlib import Path

import msgpack
import pytest

from agent.protocol.push import ConfigPush, PushRefused, open_push, push_id, sign_push
from agent.protocol.signing import BatchSigner, TrustStore, generate_key


@pytest.fixture
def operator(tmp_path: Path) -> BatchSigner:
    return generate_key(tmp_path, "operator")


def _open(payload: bytes, operator: BatchSigner, *, highest: int = 0, max_bytes: int = 1 << 20) -> ConfigPush:
    trust = TrustStore({operator.kid: operator.public_raw})
    return open_push(payload, trust=trust, gateway="gw-1", highest_version=highest, max_bytes=max_bytes)


def test_signed_push_opens_with_what_was_signed(operator: BatchSigner) -> None:
    """A push signed by a trusted key for this gateway returns its version, text, key and id."""
    payload = sign_push(operator, gateway="gw-1", version=3, toml="[gateway]\n", issued_ms=1000)

    push = _open(payload, operator)

    assert push == ConfigPush(id=push_id(payload), gateway="gw-1", version=3, issued_ms=1000, kid=operator.kid,
                              toml="[gateway]\n", trust=None)


def test_altered_text_breaks_the_signature(operator: BatchSigner) -> None:
    """Changing one byte of the signed document is refused for its signature alone."""
    payload = sign_push(operator, gateway="gw-1", version=3, toml="a = 1\n", issued_ms=1000)
    _, signed, sig = msgpack.unpackb(payload)
    altered = msgpack.packb([1, signed.replace(b"a = 1", b"a = 2"), sig], use_bin_type=True)

    with pytest.raises(PushRefused) as refused:
        _open(altered, operator)

    assert refused.value.reasons == ["signature refused: signature does not verify"]


def test_every_problem_of_an_authentic_push_is_listed(operator: BatchSigner) -> None:
    """Wrong gateway and an old version are both reported, so the operator fixes them in one go."""
    payload = sign_push(operator, gateway="gw-2", version=4, toml="", issued_ms=1000)

    with pytest.raises(PushRefused) as refused:
        _open(payload, operator, highest=9)

    assert refused.value.reasons == [
        "addressed to gateway 'gw-2', this is 'gw-1'",
        "version 4 is not newer than 9, the highest this gateway has tried (a replayed or older push)",
    ]


def test_oversized_push_is_refused_unread(operator: BatchSigner) -> None:
    """A payload over the limit is refused before it is decoded."""
    payload = sign_push(operator, gateway="gw-1", version=1, toml="#" * 5000, issued_ms=1000)

    with pytest.raises(PushRefused) as refused:
        _open(payload, operator, max_bytes=4096)

    assert refused.value.reasons == [f"push is {len(payload)} bytes, more than remote_config.max_push_bytes = 4096"]


def test_a_batch_frame_is_not_a_push(operator: BatchSigner) -> None:
    """A signed object of another type (here a map without type and toml) is refused even when its signature
    is good."""
    signed = msgpack.packb({"v": 1, "gw": "gw-1", "alg": "ed25519", "kid": operator.kid, "version": 5,
                            "issued": 1}, use_bin_type=True)
    payload = msgpack.packb([1, signed, operator.sign(signed)], use_bin_type=True)

    with pytest.raises(PushRefused) as refused:
        _open(payload, operator)

    assert refused.value.reasons == ["not a configuration push of format 1 (type None, v 1)",
                                     "the document carries no configuration text (toml)"]
