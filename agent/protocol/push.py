"""The signed configuration push (docs/protocol.md §10): what the operator publishes on ``<prefix>/<gw>/config``.

A **push** is, byte for byte::

    push     = msgpack array [ 1, document: bin, sig: bin ]
    document = msgpack map {
        "type":    "config-push",  so no other signed object (e.g. a batch's header) can pass for a push
        "v":       1,              push format version
        "gw":      str,            the gateway this configuration is for
        "version": uint,           operator's version number, 1..2**63-1; must be higher than any the gateway
                                   has tried, and at most ``max_version_step`` above the larger of that and the
                                   gateway's clock in Unix seconds
        "issued":  int,            Unix ms when the operator signed it; the push expires ``max_push_age_s``
                                   later and is refused if issued more than ``clock_skew_s`` in the future
        "alg":     "ed25519",      signature algorithm
        "kid":     str,            operator key id (agent.protocol.signing.key_id)
        "toml":    str,            the complete configuration file
        "trust":   [str, ...]      optional: the new operator trust list ('ed25519:<base64>' lines)
    }
    sig      = signature by ``kid`` over the exact ``document`` bytes

It mirrors the batch frame (agent.protocol.wire): the signature covers exact bytes, never a re-encoding, and ``alg``
and ``kid`` sit inside the signed part so they cannot be swapped. Everything here is pure (no I/O, no clock of
its own): the caller hands in the trust store, the gateway id, the highest version already tried, the time now
and the :class:`PushLimits`, and gets a :class:`ConfigPush` or a :class:`PushRefused` carrying *every* reason,
so the operator fixes all at once. Every value of the document is type- and range-checked here, before anything
uses it; refusal reasons quote a claim only shortened, so a hostile push cannot make its status large.

Why pushes expire although versions only go up: the version rule lives in the gateway's state directory; a
gateway whose state was lost (a new SD card, a wiped disk) has forgotten every version it tried, and would
apply any captured old push again. The age limit bounds that replay to pushes signed recently. Rejected: an
explicit ``expires`` field chosen by the operator, since a leaked push signed with a far expiry would then be
replayable for as long as it says; the gateway's own limit cannot be stretched by the push.
"""

from __future__ import annotations

__all__ = [
    "MAX_ISSUED_MS",
    "MAX_VERSION",
    "PUSH_FORMAT",
    "PUSH_TYPE",
    "ConfigPush",
    "PushLimits",
    "PushRefused",
    "authenticate_push",
    "open_push",
    "push_id",
    "sign_push",
]

import hashlib
from dataclasses import dataclass
from typing import Any

import msgpack

from agent.core.errors import RemoteConfigError, SignatureError
from agent.protocol.signing import ALG_ED25519, BatchSigner, TrustStore, parse_public_key

PUSH_FORMAT = 1
PUSH_TYPE = "config-push"
_MAX_TRUST_KEYS = 64
#: versions are signed 64-bit integers, so every implementation can hold them
MAX_VERSION = 2**63 - 1
#: timestamps are whole milliseconds that a double holds exactly
MAX_ISSUED_MS = 2**53
_MAX_ID_CHARS = 128
_MAX_TRUST_LINE_CHARS = 200
_MAX_QUOTED_CHARS = 40


class PushRefused(RemoteConfigError):
    """A push that must not be applied; ``reasons`` lists every problem found. ``authentic`` is False when it
    was refused before its signature verified (too large, malformed, unsigned, unknown key, bad signature):
    then anyone may have sent it."""

    def __init__(self, reasons: list[str], *, version: int | None = None, gateway: str | None = None,
                 authentic: bool = True) -> None:
        super().__init__("; ".join(reasons))
        self.reasons = reasons
        self.version = version
        self.gateway = gateway
        self.authentic = authentic


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


@dataclass(frozen=True, slots=True)
class PushLimits:
    """The gateway's own limits on a push (``[remote_config]``); none of them can be set by the push itself."""

    max_bytes: int = 1 << 20
    max_age_s: float = 72 * 3600.0
    clock_skew_s: float = 300.0
    max_version_step: int = 86400


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
    """The push payload for ``toml``, signed by the operator key ``signer``.

    Raises RemoteConfigError for a version or issued time no gateway would accept whatever its state."""
    if not 1 <= version <= MAX_VERSION:
        raise RemoteConfigError(f"version must be 1 to {MAX_VERSION}, not {version}", key="version")
    if not 0 <= issued_ms <= MAX_ISSUED_MS:
        raise RemoteConfigError(f"issued must be Unix milliseconds 0 to {MAX_ISSUED_MS}, not {issued_ms}",
                                key="issued")
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
    now_ms: int,
    limits: PushLimits,
) -> ConfigPush:
    """Check ``payload`` and return the push, or raise :class:`PushRefused` with every reason.

    The signature is checked before anything in the document is believed: an unsigned or wrongly signed
    push is refused for that alone (its claims, such as the version, are not reported back as facts).
    ``now_ms`` is the gateway's clock (Unix ms), from its injected clock.
    """
    document, kid = _authenticated(payload, trust, limits)
    reasons: list[str] = []
    target = document.get("gw")
    if document.get("type") != PUSH_TYPE or document.get("v") != PUSH_FORMAT:
        reasons.append(f"not a configuration push of format {PUSH_FORMAT} (type {_quote(document.get('type'))}, "
                       f"v {_quote(document.get('v'))})")
    if not isinstance(target, str) or not 0 < len(target) <= _MAX_ID_CHARS:
        reasons.append(f"the document names no target gateway (gw), or not as 1 to {_MAX_ID_CHARS} characters")
        target = None
    elif target != gateway:
        reasons.append(f"addressed to gateway {_quote(target)}, this is {gateway!r}")
    version = _version(document.get("version"), highest_version, now_ms, limits, reasons)
    toml = document.get("toml")
    if not isinstance(toml, str):
        reasons.append("the document carries no configuration text (toml)")
    issued = _issued(document.get("issued"), now_ms, limits, reasons)
    new_trust = _trust_list(document.get("trust"), reasons)
    if reasons:
        raise PushRefused(reasons, version=version, gateway=target)
    assert version is not None
    assert isinstance(toml, str)
    assert issued is not None
    return ConfigPush(id=push_id(bytes(payload)), gateway=gateway, version=version, issued_ms=issued, kid=kid,
                      toml=toml, trust=new_trust)


def authenticate_push(payload: bytes, *, trust: TrustStore, limits: PushLimits) -> None:
    """Raise :class:`PushRefused` (``authentic`` False) unless ``payload`` is a push within ``limits.max_bytes``
    whose signature verifies with ``trust``: the first half of :func:`open_push`, which a gateway runs before a
    payload may wait for its turn, so that nobody without an operator key can occupy the queue."""
    _authenticated(payload, trust, limits)


def _authenticated(payload: object, trust: TrustStore, limits: PushLimits) -> tuple[dict[str, Any], str]:
    """The signed document of ``payload`` and its key id, once the signature has verified."""
    if not isinstance(payload, bytes | bytearray):
        raise PushRefused(["malformed: a push is binary"], authentic=False)
    if len(payload) > limits.max_bytes:
        raise PushRefused([f"push is {len(payload)} bytes, more than remote_config.max_push_bytes = "
                           f"{limits.max_bytes}"], authentic=False)
    signed, signature = _split(bytes(payload))
    document = _decode_document(signed)
    alg, kid = document.get("alg"), document.get("kid")
    if not isinstance(alg, str) or not isinstance(kid, str):
        raise PushRefused(["unsigned: the document names no signature algorithm and key (alg, kid)"],
                          authentic=False)
    if len(alg) > _MAX_ID_CHARS or len(kid) > _MAX_ID_CHARS:
        raise PushRefused([f"unsigned: alg and kid are at most {_MAX_ID_CHARS} characters"], authentic=False)
    try:
        trust.verify(alg, kid, signed, signature)
    except SignatureError as exc:
        raise PushRefused([f"signature refused: {exc}"], authentic=False) from None
    return document, kid


def _version(value: object, highest: int, now_ms: int, limits: PushLimits, reasons: list[str]) -> int | None:
    """The push's version if it is a whole number in range; every rule it breaks goes to ``reasons``.

    The ceiling is relative to the larger of the highest version tried and the clock in seconds, so the
    operator tool's default (the Unix time) always fits, and a push with a version far ahead of both (a typo,
    or a leaked key's parting shot) cannot lock out the pushes that follow."""
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= MAX_VERSION:
        reasons.append(f"version must be a whole number from 1 to {MAX_VERSION}, got {_quote(value)}")
        return None
    if value <= highest:
        reasons.append(f"version {value} is not newer than {highest}, the highest this gateway has "
                       "tried (a replayed or older push)")
    ceiling = max(highest, now_ms // 1000) + limits.max_version_step
    if value > ceiling:
        reasons.append(f"version {value} is more than remote_config.max_version_step = {limits.max_version_step} "
                       f"above {max(highest, now_ms // 1000)}, the larger of the highest version tried and this "
                       f"gateway's clock in Unix seconds (use version {highest + 1} to {ceiling})")
    return value


def _issued(value: object, now_ms: int, limits: PushLimits, reasons: list[str]) -> int | None:
    """The push's signing time if it is in range and the push is neither expired nor from the future."""
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_ISSUED_MS:
        reasons.append(f"issued must be Unix milliseconds from 0 to {MAX_ISSUED_MS}, got {_quote(value)}")
        return None
    skew_ms = round(limits.clock_skew_s * 1000)
    age_ms = now_ms - value
    if age_ms > round(limits.max_age_s * 1000) + skew_ms:
        reasons.append(f"expired: issued {age_ms // 1000} s ago by this gateway's clock, more than "
                       f"remote_config.max_push_age_s = {limits.max_age_s:g} (+ clock_skew_s = "
                       f"{limits.clock_skew_s:g}); sign it again")
    elif -age_ms > skew_ms:
        reasons.append(f"issued {-age_ms // 1000} s in the future by this gateway's clock, more than "
                       f"remote_config.clock_skew_s = {limits.clock_skew_s:g} (check the clocks of both sides)")
    return value


def _quote(value: object) -> str:
    """A claim quoted in a reason, shortened: a reason never carries much of what a push sent."""
    text = repr(value) if isinstance(value, str | int | float | bool | None) else f"a {type(value).__name__}"
    return text if len(text) <= _MAX_QUOTED_CHARS else text[:_MAX_QUOTED_CHARS - 3] + "..."


def _split(payload: bytes) -> tuple[bytes, bytes]:
    try:
        outer = msgpack.unpackb(payload, raw=False, use_list=True, max_bin_len=len(payload),
                                max_str_len=len(payload), max_array_len=16, max_map_len=64)
    except (ValueError, msgpack.UnpackException, TypeError) as exc:
        raise PushRefused([f"malformed: not a msgpack push ({type(exc).__name__})"], authentic=False) from None
    if not isinstance(outer, list) or len(outer) != 3 or outer[0] != PUSH_FORMAT:
        raise PushRefused([f"malformed: a push is the array [{PUSH_FORMAT}, document, signature]"], authentic=False)
    _, signed, signature = outer
    if not isinstance(signed, bytes) or not isinstance(signature, bytes):
        raise PushRefused(["malformed: document and signature must be binary"], authentic=False)
    return signed, signature


def _decode_document(signed: bytes) -> dict[str, Any]:
    try:
        document = msgpack.unpackb(signed, raw=False, max_str_len=len(signed), max_bin_len=len(signed),
                                   max_array_len=_MAX_TRUST_KEYS * 2, max_map_len=64)
    except (ValueError, msgpack.UnpackException, TypeError) as exc:
        raise PushRefused([f"malformed: the signed document is not a msgpack map ({type(exc).__name__})"],
                          authentic=False) from None
    if not isinstance(document, dict):
        raise PushRefused(["malformed: the signed document is not a map"], authentic=False)
    return document


def _trust_list(value: object, reasons: list[str]) -> tuple[str, ...] | None:
    """A new operator trust list, if the push carries one: 1..64 valid ed25519 public key lines."""
    if value is None:
        return None
    if not isinstance(value, list) or not value or len(value) > _MAX_TRUST_KEYS:
        reasons.append(f"trust must be a list of 1 to {_MAX_TRUST_KEYS} public keys")
        return None
    lines: list[str] = []
    for i, line in enumerate(value):
        if not isinstance(line, str) or len(line) > _MAX_TRUST_LINE_CHARS:
            reasons.append(f"trust[{i}] is not a public key line of at most {_MAX_TRUST_LINE_CHARS} characters")
            continue
        try:
            alg, _ = parse_public_key(line)
        except SignatureError as exc:
            reasons.append(f"trust[{i}]: {exc.message}")
            continue
        if alg != ALG_ED25519:
            reasons.append(f"trust[{i}]: unsupported algorithm {_quote(alg)}")
            continue
        lines.append(line.strip())
    return tuple(lines)
