"""The signed configuration push (docs/protocol.md §10): what the operator publishes on ``<prefix>/<gw>/config``.

A **push** is, byte for byte::

    push     = msgpack array [ 1, document: bin, sig: bin ]
    document = msgpack map {
        "type":    "config-push",  so no other signed object (e.g. a batch's header) can pass for a push
        "v":       1,              push format version
        "gw":      str,            the gateway this configuration is for
        "version": uint,           operator's version number; must be higher than any the gateway has tried
        "issued":  int,            Unix ms when the operator signed it (informative)
        "alg":     "ed25519",      signature algorithm
        "kid":     str,            operator key id (agent.protocol.signing.key_id)
        "toml":    str,            the complete configuration file
        "trust":   [str, ...]      optional: the new operator trust list ('ed25519:<base64>' lines)
    }
    sig      = signature by ``kid`` over the exact ``document`` bytes

It mirrors the batch frame (agent.protocol.wire): the signature covers exact bytes, never a re-encoding, and ``alg``
and ``kid`` sit inside the signed part so they cannot be swapped. Everything here is pure (no I/O): the
caller hands in the trust store, the gateway id and the highest version already tried, and gets a
:class:`ConfigPush` or a :class:`PushRefused` carrying *every* reason, so the operator fixes all at once.
"""

from __future__ import annotations

__all__ = ["PUSH_FORMAT", "PUSH_TYPE", "ConfigPush", "PushRefused", "open_push", "push_id", "sign_push"]

import hashlib
from dataclasses import dataclass
from typing import Any

import msgpack

from agent.core.errors import RemoteConfigError, SignatureError
from agent.protocol.signing import ALG_ED25519, BatchSigner, TrustStore, parse_public_key

PUSH_FORMAT = 1
PUSH_TYPE = "config-push"
_MAX_TRUST_KEYS = 64


class PushRefused(RemoteConfigError):
    """A push that must not be applied; ``reasons`` lists every problem found."""

    def __init__(self, reasons: list[str], *, version: int | None = None, gateway: str | None = None) -> None:
        super().__init__("; ".join(reasons))
        self.reasons = reasons
        self.version = version
        self.gateway = gateway


@dataclass(frozen=True, slots=True)
class ConfigPush:
    """A push whose signature, target and version have been checked (its TOML has not been validated yet)."""

    id: str
    gateway: str
    version: int
    issued_ms: int
    kid: str
    toml: str
    trust: tuple[str, ...] | None


def push_id(payload: bytes) -> str:
    """A short name for one push (first 16 hex digits of SHA-256 of the payload), echoed in every status so
    the operator's tool matches the outcome to what it sent."""
    return hashlib.sha256(payload).hexdigest()[:16]


def sign_push(
    signer: BatchSigner,
    *,
    gateway: str,
    version: int,
    toml: str,
    issued_ms: int,
    trust: list[str] | None = None,
) -> bytes:
    """The push payload for ``toml``, signed by the operator key ``signer``."""
    document: dict[str, Any] = {
        "type": PUSH_TYPE,
        "v": PUSH_FORMAT,
        "gw": gateway,
        "version": version,
        "issued": issued_ms,
        "alg": signer.alg,
        "kid": signer.kid,
        "toml": toml,
    }
    if trust is not None:
        document["trust"] = list(trust)
    signed = msgpack.packb(document, use_bin_type=True)
    return msgpack.packb([PUSH_FORMAT, signed, signer.sign(signed)], use_bin_type=True)


def open_push(
    payload: bytes,
    *,
    trust: TrustStore,
    gateway: str,
    highest_version: int,
    max_bytes: int,
) -> ConfigPush:
    """Check ``payload`` and return the push, or raise :class:`PushRefused` with every reason.

    The signature is checked before anything in the document is believed: an unsigned or wrongly signed
    push is refused for that alone (its claims, such as the version, are not reported back as facts).
    """
    if len(payload) > max_bytes:
        raise PushRefused([f"push is {len(payload)} bytes, more than remote_config.max_push_bytes = {max_bytes}"])
    signed, signature = _split(payload)
    document = _decode_document(signed)
    alg, kid = document.get("alg"), document.get("kid")
    if not isinstance(alg, str) or not isinstance(kid, str):
        raise PushRefused(["unsigned: the document names no signature algorithm and key (alg, kid)"])
    try:
        trust.verify(alg, kid, signed, signature)
    except SignatureError as exc:
        raise PushRefused([f"signature refused: {exc}"]) from None

    reasons: list[str] = []
    version = document.get("version")
    target = document.get("gw")
    if document.get("type") != PUSH_TYPE or document.get("v") != PUSH_FORMAT:
        reasons.append(f"not a configuration push of format {PUSH_FORMAT} (type {document.get('type')!r}, "
                       f"v {document.get('v')!r})")
    if not isinstance(target, str):
        reasons.append("the document names no target gateway (gw)")
    elif target != gateway:
        reasons.append(f"addressed to gateway {target!r}, this is {gateway!r}")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        reasons.append(f"version must be a whole number of at least 1, got {version!r}")
        version = None
    elif version <= highest_version:
        reasons.append(f"version {version} is not newer than {highest_version}, the highest this gateway has "
                       "tried (a replayed or older push)")
    toml = document.get("toml")
    if not isinstance(toml, str):
        reasons.append("the document carries no configuration text (toml)")
    issued = document.get("issued")
    if not isinstance(issued, int) or isinstance(issued, bool):
        reasons.append(f"issued must be Unix milliseconds, got {issued!r}")
    new_trust = _trust_list(document.get("trust"), reasons)
    if reasons:
        raise PushRefused(reasons, version=version, gateway=target if isinstance(target, str) else None)
    assert isinstance(version, int)
    assert isinstance(toml, str)
    assert isinstance(issued, int)
    return ConfigPush(id=push_id(payload), gateway=gateway, version=version, issued_ms=issued, kid=kid,
                      toml=toml, trust=new_trust)


def _split(payload: bytes) -> tuple[bytes, bytes]:
    try:
        outer = msgpack.unpackb(payload, raw=False, use_list=True, max_bin_len=len(payload),
                                max_str_len=len(payload), max_array_len=16, max_map_len=64)
    except (ValueError, msgpack.UnpackException, TypeError) as exc:
        raise PushRefused([f"malformed: not a msgpack push ({type(exc).__name__})"]) from None
    if not isinstance(outer, list) or len(outer) != 3 or outer[0] != PUSH_FORMAT:
        raise PushRefused([f"malformed: a push is the array [{PUSH_FORMAT}, document, signature]"])
    _, signed, signature = outer
    if not isinstance(signed, bytes) or not isinstance(signature, bytes):
        raise PushRefused(["malformed: document and signature must be binary"])
    return signed, signature


def _decode_document(signed: bytes) -> dict[str, Any]:
    try:
        document = msgpack.unpackb(signed, raw=False, max_str_len=len(signed), max_bin_len=len(signed),
                                   max_array_len=_MAX_TRUST_KEYS * 2, max_map_len=64)
    except (ValueError, msgpack.UnpackException, TypeError) as exc:
        raise PushRefused([f"malformed: the signed document is not a msgpack map ({type(exc).__name__})"]) from None
    if not isinstance(document, dict):
        raise PushRefused(["malformed: the signed document is not a map"])
    return document


def _trust_list(value: object, reasons: list[str]) -> tuple[str, ...] | None:
    """A new operator trust list, if the push carries one: 1..64 valid ed25519 public key lines."""
    if value is None:
        return None
    if not isinstance(value, list) or not value or len(value) > _MAX_TRUST_KEYS:
        reasons.append(f"trust must be a list of 1 to {_MAX_TRUST_KEYS} public keys")
        return None
    for i, line in enumerate(value):
        if not isinstance(line, str):
            reasons.append(f"trust[{i}] is not text")
            continue
        try:
            alg, _ = parse_public_key(line)
        except SignatureError as exc:
            reasons.append(f"trust[{i}]: {exc.message}")
            continue
        if alg != ALG_ED25519:
            reasons.append(f"trust[{i}]: unsupported algorithm {alg!r}")
    return tuple(line.strip() for line in value if isinstance(line, str))
