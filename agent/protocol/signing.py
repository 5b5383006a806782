"""Gateway and operator keys: Ed25519 signing and verification.

The agent signs the exact bytes it sends (see :mod:`agent.protocol.wire`). Every signed frame names its algorithm
(``alg``) and key (``kid``) so another algorithm (e.g. SM2) or a rotated key can be added without changing
the format: a verifier looks the pair up in its trust store and refuses what it does not know.

Key files: the private key is a PKCS#8 PEM written with mode 0600; the public key is a one-line text file
``ed25519:<base64 raw 32 bytes>``, which is also what the trust files of the receiver and of remote
configuration list, one per line (``#`` starts a comment).
"""

from __future__ import annotations

__all__ = [
    "ALG_ED25519",
    "BatchSigner",
    "TrustStore",
    "format_public_key",
    "generate_key",
    "key_id",
    "load_signer",
    "parse_public_key",
]

import base64
import hashlib
import os
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from agent.core.errors import AgentError, SignatureError

ALG_ED25519 = "ed25519"


def key_id(public_raw: bytes) -> str:
    """A short, stable name for a public key: the first 16 hex digits of its SHA-256."""
    return hashlib.sha256(public_raw).hexdigest()[:16]


def _raw_public(pub: Ed25519PublicKey) -> bytes:
    return pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def format_public_key(public_raw: bytes) -> str:
    return f"{ALG_ED25519}:{base64.b64encode(public_raw).decode()}"


def parse_public_key(text: str) -> tuple[str, bytes]:
    """Parse ``ed25519:<base64>`` into (alg, raw key bytes)."""
    alg, sep, b64 = text.strip().partition(":")
    if not sep or alg != ALG_ED25519:
        raise SignatureError(f"unsupported public key {text.strip()[:40]!r}", hint="expected 'ed25519:<base64>'")
    try:
        raw = base64.b64decode(b64, validate=True)
    except ValueError as exc:
        raise SignatureError("public key is not valid base64", hint="expected 'ed25519:<base64>'") from exc
    if len(raw) != 32:
        raise SignatureError(f"an ed25519 public key has 32 bytes, this one has {len(raw)}")
    return alg, raw


class BatchSigner:
    """Signs frames with one private key. Construct with :func:`load_signer` or :func:`generate_key`."""

    alg = ALG_ED25519

    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        self._key = private_key
        self.public_raw = _raw_public(private_key.public_key())
        self.kid = key_id(self.public_raw)

    def sign(self, data: bytes) -> bytes:
        return self._key.sign(data)

    @property
    def public_text(self) -> str:
        return format_public_key(self.public_raw)


def generate_key(directory: Path, name: str = "gateway") -> BatchSigner:
    """Create ``<name>.key`` (0600, never overwritten) and ``<name>.pub`` in ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    key_path = directory / f"{name}.key"
    if key_path.exists():
        raise AgentError(f"{key_path} already exists", path=str(key_path),
                         hint="a key is never overwritten; move it away first if you really mean to replace it")
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
        f.flush()
        os.fsync(f.fileno())
    signer = BatchSigner(key)
    (directory / f"{name}.pub").write_text(signer.public_text + "\n")
    return signer


def load_signer(path: Path) -> BatchSigner:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise AgentError(f"cannot read private key: {exc.strerror}", path=str(path),
                         hint="create one with 'mine-agent keys init DIR'") from exc
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise AgentError("not a PEM private key", path=str(path)) from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise AgentError("the private key is not an Ed25519 key", path=str(path))
    return BatchSigner(key)


class TrustStore:
    """Public keys a verifier accepts, by key id."""

    def __init__(self, keys: dict[str, bytes] | None = None) -> None:
        self._keys: dict[str, Ed25519PublicKey] = {}
        for raw in (keys or {}).values():
            self.add(raw)

    def add(self, public_raw: bytes) -> str:
        kid = key_id(public_raw)
        self._keys[kid] = Ed25519PublicKey.from_public_bytes(public_raw)
        return kid

    def __contains__(self, kid: object) -> bool:
        return kid in self._keys

    def __len__(self) -> int:
        return len(self._keys)

    @property
    def key_ids(self) -> list[str]:
        return sorted(self._keys)

    @classmethod
    def from_file(cls, path: Path) -> TrustStore:
        """Load ``ed25519:<base64>`` lines; blank lines and ``#`` comments are ignored."""
        store = cls()
        try:
            text = path.read_text()
        except OSError as exc:
            raise AgentError(f"cannot read trust file: {exc.strerror}", path=str(path)) from exc
        for lineno, line in enumerate(text.splitlines(), 1):
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            try:
                _, raw = parse_public_key(line)
            except SignatureError as exc:
                raise SignatureError(exc.message, path=str(path), line=lineno, hint=exc.hint) from exc
            store.add(raw)
        return store

    def verify(self, alg: str, kid: str, data: bytes, signature: bytes) -> None:
        """Raise :class:`SignatureError` unless ``signature`` is a valid signature of ``data`` by ``kid``."""
        if alg != ALG_ED25519:
            raise SignatureError(f"unsupported signature algorithm {alg!r}")
        key = self._keys.get(kid)
        if key is None:
            raise SignatureError(f"unknown key id {kid!r}", hint="add the signer's public key to the trust file")
        try:
            key.verify(signature, data)
        except InvalidSignature as exc:
            raise SignatureError("signature does not verify") from exc
