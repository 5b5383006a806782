"""The signed configuration status (docs/protocol.md §10.4): what the gateway publishes on
``<prefix>/<gw>/config/status``, byte for byte::

    message = msgpack array [ 1, status: bin, sig: bin ]
    status  = a UTF-8 JSON object: the fields of §10.4, plus
              "type": "config-status", "alg": "ed25519", "signer": gateway key id
    sig     = signature by the gateway key ``signer`` over the exact ``status`` bytes (empty when the
              gateway has no usable key: such a status is never verified)

Why signed: the status topic is writable by whoever the broker lets publish there, and the operator tool acts on
a final status (it clears the retained push). An unsigned ``applied`` forged by anyone who can read the push
would make the tool report success and clear a push that an offline gateway never received. The key is the one
the gateway signs its batches with, which the backend already knows; ``"type"`` keeps a status from passing for
any other object signed by that key. The status stays JSON inside the envelope, so a reader without the key can
still show it, marked unverified, and must not act on it.

Rejected: a signature field inside the JSON (it would cover a re-encoding, not the bytes sent; every signature of
this protocol covers exact bytes), and a second topic for signatures (two messages that can arrive apart).
"""

from __future__ import annotations

__all__ = ["MAX_STATUS_BYTES", "STATUS_FORMAT", "STATUS_TYPE", "OpenedStatus", "open_status", "sign_status"]

import json
from dataclasses import dataclass
from typing import Any

import msgpack

from agent.core.errors import SignatureError
from agent.protocol.signing import ALG_ED25519, BatchSigner, TrustStore

STATUS_FORMAT = 1
STATUS_TYPE = "config-status"
#: a status is a few hundred bytes; one with every problem of a large configuration a few tens of KiB
MAX_STATUS_BYTES = 256 * 1024
_MAX_ID_CHARS = 128


@dataclass(frozen=True, slots=True)
class OpenedStatus:
    """A status message taken apart: the JSON value it carries, and whether the expected key signed it."""

    value: Any
    verified: bool


def sign_status(signer: BatchSigner | None, status: dict[str, Any]) -> bytes:
    """The message for ``status``, signed with the gateway key ``signer`` (unsigned when None)."""
    document = {**status, "type": STATUS_TYPE, "alg": ALG_ED25519,
                "signer": signer.kid if signer is not None else None}
    body = json.dumps(document, separators=(",", ":")).encode()
    signature = signer.sign(body) if signer is not None else b""
    return msgpack.packb([STATUS_FORMAT, body, signature], use_bin_type=True)


def open_status(payload: object, *, key: TrustStore | None) -> OpenedStatus | None:
    """The JSON value of a status message, verified against ``key`` (the gateway's public key) when given.

    None when ``payload`` is not a status message at all (too large, not the envelope, not JSON). A plain JSON
    payload (gateways of earlier releases) opens as unverified. ``verified`` is True only when the envelope's
    signature by ``key`` covers the status bytes and the status names that key and the ``config-status``
    type; without ``key`` nothing is verified. Never raises."""
    if isinstance(payload, str):
        payload = payload.encode("utf-8", "replace")
    if not isinstance(payload, bytes | bytearray) or len(payload) > MAX_STATUS_BYTES:
        return None
    body, signature = _split(bytes(payload))
    try:
        value = json.loads(body)
    except (ValueError, RecursionError):
        return None
    verified = False
    if signature is not None and key is not None and isinstance(value, dict):
        alg, signer = value.get("alg"), value.get("signer")
        if (value.get("type") == STATUS_TYPE and isinstance(alg, str) and isinstance(signer, str)
                and len(alg) <= _MAX_ID_CHARS and len(signer) <= _MAX_ID_CHARS):
            try:
                key.verify(alg, signer, body, signature)
            except SignatureError:
                pass
            else:
                verified = True
    return OpenedStatus(value, verified)


def _split(payload: bytes) -> tuple[bytes, bytes | None]:
    """(status bytes, signature) of the envelope; (payload, None) for anything else (plain JSON, or junk that
    the JSON parser then refuses)."""
    if not payload or payload[0] != 0x93:  # a msgpack array of 3: anything else is not the envelope
        return payload, None
    try:
        outer = msgpack.unpackb(payload, raw=False, use_list=True, max_bin_len=len(payload),
                                max_str_len=len(payload), max_array_len=3, max_map_len=0)
    except (ValueError, msgpack.UnpackException, TypeError):
        return payload, None
    if (isinstance(outer, list) and len(outer) == 3 and outer[0] == STATUS_FORMAT
            and isinstance(outer[1], bytes) and isinstance(outer[2], bytes)):
        return outer[1], outer[2]
    return payload, None
