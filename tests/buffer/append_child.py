"""A child process for crash tests: appends (and sometimes acks) in a loop until it is killed.

Usage: ``python3 -m tests.buffer.append_child STORE MAX_BYTES ACK_EVERY``, or :func:`append_forever` in a
process forked from a preloaded forkserver (the soak test: a fresh interpreter costs ~1 s per kill on a
loaded machine). It continues the chain found in the store and reports, before going on,
``committed <seq>`` after each append returns and ``acking <first> <last>`` before each ack call, so the
parent knows exactly what was promised.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Protocol

from agent.protocol import wire
from buffer import DiskQueue
from tests.buffer.frames import ChainMaker


class _Stdout:
    def send(self, line: str) -> None:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


class Reporter(Protocol):
    def send(self, obj: str, /) -> None: ...


def main() -> None:
    append_forever(Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), _Stdout())


def append_forever(path: Path, max_bytes: int, ack_every: int, out: Reporter) -> None:
    q = DiskQueue(path, max_bytes=max_bytes, frame_tags=wire.frame_tags, sync="full", min_free_bytes=0)
    q.open()
    seq, prev = q.chain_head()
    chain = ChainMaker(seq, prev)
    n = 0
    while True:
        batch = chain.next(padding=300 + (chain.seq * 37) % 3000)
        q.append(batch)
        out.send(f"committed {batch.seq}")
        n += 1
        if ack_every and n % ack_every == 0:
            oldest = q.peek(ack_every // 2 or 1)
            if oldest:
                out.send(f"acking {oldest[0].seq} {oldest[-1].seq}")
                q.ack(b.seq for b in oldest)


if __name__ == "__main__":
    main()
