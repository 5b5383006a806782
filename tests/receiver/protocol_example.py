"""The worked example of docs/protocol.md, generated from the code so the document cannot drift from it.

Run ``python3 -m tests.receiver.protocol_example`` to rewrite the generated block in docs/protocol.md after a
deliberate format change; tests/receiver/test_protocol_doc.py fails while the two differ.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgpack
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.protocol import wire
from agent.protocol.signing import BatchSigner
from agent.protocol.tables import WIN_COLUMNS

DOC = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"
BEGIN = "<!-- BEGIN generated example: python3 -m tests.receiver.protocol_example -->"
END = "<!-- END generated example -->"
EXAMPLE_KEY = bytes(range(32))  # a published test key: never use it for anything real
T0 = 1_700_000_000_000


def example_signer() -> BatchSigner:
    return BatchSigner(Ed25519PrivateKey.from_private_bytes(EXAMPLE_KEY))


def example_batch() -> wire.Batch:
    """One 10 s window of one tag (five readings of 0.4, five of 0.5, once a second from :00.5), uncompressed so
    the body is readable in the hex."""
    row = [0, 0, 10_000, 10, 10, 0, 0.4, 0.5, 0.45, 0.5, 0, 10, 0.45, 0.05, 0.4, T0 + 500, T0 + 9_500, T0 + 500,
           T0 + 1_500, 0]
    body = wire.encode_body(["plc1.ch4"], {"win": wire.Table(WIN_COLUMNS, [row])}, T0, enc="none")
    return wire.encode_frame(example_signer(), gw="gw-01", seq=1, prev=wire.GENESIS_HASH, created=T0 + 10_250,
                             t0=T0, t1=T0 + 10_000, kind="data", enc="none", body=body)


def _hex(b: bytes, limit: int = 12) -> str:
    shown = " ".join(f"{x:02x}" for x in b[:limit])
    return shown + (f" … ({len(b)} bytes)" if len(b) > limit else "")


def _describe(value: Any) -> str:
    if isinstance(value, bytes):
        return f"bin, {len(value)} bytes"
    return json.dumps(value)


def render() -> str:
    """The generated markdown block: frame hex, byte-by-byte walk of the header, decoded body."""
    batch = example_batch()
    header = msgpack.unpackb(batch.signed, raw=False)
    lines = [BEGIN, "", "Public key (trust file line) and key id:", "", "```",
             example_signer().public_text, f"kid = {example_signer().kid}", "```", "",
             f"The whole frame, {len(batch.frame)} bytes:", "", "```"]
    lines += [batch.frame[i:i + 32].hex(" ") for i in range(0, len(batch.frame), 32)]
    lines += ["```", "", "Walked through:", "", "```", "offset  " + "bytes".ljust(50) + " meaning"]

    def row(offset: int, data: bytes, meaning: str) -> None:
        lines.append(f"{offset:04x}    {_hex(data):<50} {meaning}")

    pos = 0
    row(pos, batch.frame[0:1], "fixarray of 3 elements")
    pos += 1
    row(pos, batch.frame[1:2], f"format version {batch.frame[1]}")
    pos += 1
    signed_head = msgpack.packb(batch.signed, use_bin_type=True)[: -len(batch.signed)]
    row(pos, signed_head, f"bin, {len(batch.signed)} bytes follow: the signed header")
    pos += len(signed_head)
    signed_start = pos
    map_head = batch.signed[:1]
    row(pos, map_head, f"fixmap of {len(header)} entries")
    pos += 1
    for key, value in header.items():
        k = msgpack.packb(key, use_bin_type=True)
        v = msgpack.packb(value, use_bin_type=True)
        row(pos, k, f"key {json.dumps(key)}")
        row(pos + len(k), v, f"  {_describe(value)}")
        pos += len(k) + len(v)
    assert pos - signed_start == len(batch.signed), "the walk must cover the signed bytes exactly"
    sig_head = msgpack.packb(batch.sig, use_bin_type=True)[: -len(batch.sig)]
    row(pos, sig_head, f"bin, {len(batch.sig)} bytes follow: the Ed25519 signature")
    pos += len(sig_head)
    row(pos, batch.sig, "signature over the signed header bytes")
    pos += len(batch.sig)
    assert pos == len(batch.frame)
    lines += ["```", "",
              f"Signed bytes: offsets {signed_start:#06x} to {signed_start + len(batch.signed) - 1:#06x} "
              f"({len(batch.signed)} bytes).", "",
              "Batch hash = SHA-256 of the signed bytes (the `prev` of seq 2 in this chain):", "",
              "```", batch.hash.hex(), "```", "",
              "The body (`enc` is `none`, so it is the msgpack map itself), decoded:", "", "```json",
              json.dumps(msgpack.unpackb(batch.body, raw=False)), "```", "",
              "and after resolving the tag dictionary and the time offsets, the one `win` row reads:", "",
              "```json",
              json.dumps(dict(zip(WIN_COLUMNS, wire.decode_body(batch).tables["win"].rows[0], strict=True))),
              "```", "", END]
    return "\n".join(lines)


def documented_block(text: str) -> str:
    start, end = text.index(BEGIN), text.index(END) + len(END)
    return text[start:end]


def rewrite_doc() -> None:
    text = DOC.read_text()
    DOC.write_text(text.replace(documented_block(text), render()))


if __name__ == "__main__":
    rewrite_doc()
