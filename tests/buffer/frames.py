"""Real signed frames for buffer tests: a tiny batcher that chains seq and prev like the real one."""

from __future__ import annotations

import os

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.protocol import wire
from agent.protocol.signing import BatchSigner
from buffer import QueuedBatch


class ChainMaker:
    """Makes consecutive, correctly chained frames starting after ``(seq, prev)``."""

    def __init__(self, seq: int = 0, prev: bytes = wire.GENESIS_HASH, *, gw: str = "gw-test") -> None:
        self.signer = BatchSigner(Ed25519PrivateKey.generate())
        self.seq = seq
        self.prev = prev
        self.gw = gw

    def next(self, kind: str = "data", *, tags: list[str] | None = None, t0: int | None = None,
             rows_per_tag: int = 1, padding: int = 0) -> QueuedBatch:
        """The next batch: ``rows_per_tag`` raw rows per tag; ``padding`` adds incompressible bytes."""
        self.seq += 1
        tags = tags if tags is not None else ["plc1.ch4", "plc1.co"]
        t0 = t0 if t0 is not None else 1_700_000_000_000 + self.seq * 1000
        if kind == "gap":
            cols = ["first_seq", "last_seq", "batches", "records", "from_ms", "to_ms", "reason", "tags"]
            table = wire.Table(cols, [[1, 1, 1, 1, t0, t0, "cap", tags]])
            tables = {"gap": table}
            body_tags: list[str] = []
            records = 1
        elif kind == "catalog":
            cols = ["tag", "unit", "type", "description", "scale", "offset", "low", "high", "location"]
            rows = [[i, "%", "float", "", 1.0, 0.0, None, None, ""] for i in range(len(tags))]
            tables = {"catalog": wire.Table(cols, rows)}
            body_tags = tags
            records = len(rows)
        else:
            name = "alarm" if kind == "alarm" else "raw"
            rows = [[i, k * 10, float(i + k)] for i in range(len(tags)) for k in range(rows_per_tag)]
            if padding:
                rows.append([0, 0, os.urandom(padding)])
            tables = {name: wire.Table(["tag", "ts", "value"], rows)}
            body_tags = tags
            records = len(rows)
        body = wire.encode_body(body_tags, tables, t0)
        b = wire.encode_frame(self.signer, gw=self.gw, seq=self.seq, prev=self.prev, created=t0 + 1000, t0=t0,
                              t1=t0 + 999, kind=kind, enc="zstd", body=body)
        self.prev = b.hash
        return QueuedBatch.from_wire(b, records)
