"""The worked ack example of docs/protocol.md §7.4, generated from the code: ``python3 -m tests.protocol.ack_example``
prints the block to paste between its markers; tests/protocol/test_acks.py checks the document against it."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.protocol import acks
from agent.protocol.signing import BatchSigner

DOC = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"
BEGIN = "<!-- BEGIN generated ack example: python3 -m tests.protocol.ack_example -->"
END = "<!-- END generated ack example -->"
GW = "gw-01"
ISSUED = 1_767_225_600_000  # 2026-01-01T00:00:00Z


def archive_signer() -> BatchSigner:
    """The example's archive key: Ed25519 private key = 32 bytes of 0x0a (never use a key like this)."""
    return BatchSigner(Ed25519PrivateKey.from_private_bytes(bytes([10]) * 32))


def example_runs() -> list[acks.AckRange]:
    """Two runs: seqs 1..3 and 5; the 'hashes' stand for batch hashes (SHA-256 of a label, for the example)."""
    return [acks.AckRange(1, 3, hashlib.sha256(b"batch 3").digest()),
            acks.AckRange(5, 5, hashlib.sha256(b"batch 5").digest())]


def example_ack() -> bytes:
    return acks.encode_ack(archive_signer(), gw=GW, ranges=example_runs(), issued=ISSUED)


def render() -> str:
    signer = archive_signer()
    payload = example_ack()
    hexed = payload.hex()
    lines = [hexed[i:i + 96] for i in range(0, len(hexed), 96)]
    runs = "\n".join(f"    [{r.first}, {r.last}, {r.last_hash.hex()}]" for r in example_runs())
    return "\n".join([
        BEGIN,
        "",
        f"Archive key: private key 32 bytes of `0x0a`; public line `{signer.public_text}`, kid `{signer.kid}`.",
        f"The ack for gateway `{GW}`, issued `{ISSUED}`, acknowledging these runs (first, last, hash of last):",
        "",
        "```",
        runs,
        "```",
        "",
        f"is this payload ({len(payload)} bytes, hex); a gateway holding the archive's public line and, at seq 3",
        "and 5, batches with those hashes deletes seqs 1, 2, 3 and 5 on it:",
        "",
        "```",
        *lines,
        "```",
        "",
        END,
    ])


def documented_block(text: str) -> str:
    match = re.search(re.escape(BEGIN) + r".*?" + re.escape(END), text, re.DOTALL)
    return match.group(0) if match else ""


if __name__ == "__main__":
    print(render())
