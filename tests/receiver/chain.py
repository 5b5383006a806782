"""Build real signed, chained frames for receiver tests, the way the gateway's batcher does."""

from __future__ import annotations

from agent.protocol import wire
from agent.protocol.signing import BatchSigner
from agent.protocol.tables import CATALOG_COLUMNS, GAP_COLUMNS, OUTAGE_COLUMNS
from backend.receiver import ReceiverStore
from backend.registry import entry_for

WIN_COLUMNS = ["tag", "start", "dur_ms", "count", "good", "bad", "min", "max", "mean", "last"]  # the original ten
T0 = 1_700_000_000_000


class Chain:
    """One gateway's batch sequence: each :meth:`data` / :meth:`gap` call makes the next seq."""

    def __init__(self, signer: BatchSigner, gw: str = "gw-01") -> None:
        self.signer = signer
        self.gw = gw
        self.seq = 0
        self.prev = wire.GENESIS_HASH

    def _next(self, kind: str, body: bytes, t0: int, t1: int) -> wire.Batch:
        batch = wire.encode_frame(self.signer, gw=self.gw, seq=self.seq + 1, prev=self.prev, created=t1 + 5,
                                  t0=t0, t1=t1, kind=kind, enc="zstd", body=body)
        self.seq, self.prev = batch.seq, batch.hash
        return batch

    def data(self, rows: int = 2, *, kind: str = "data", value: float = 0.5, t0: int | None = None) -> wire.Batch:
        """A batch of ``rows`` 10 s windows of tag ``plc1.ch4`` (one window per row), from ``t0`` (default:
        100 s after the previous batch's)."""
        t0 = T0 + self.seq * 100_000 if t0 is None else t0
        table = wire.Table(WIN_COLUMNS, [[0, i * 10_000, 10_000, 10, 10, 0, value, value, value, value]
                                         for i in range(rows)])
        return self._next(kind, wire.encode_body(["plc1.ch4"], {"win": table}, t0), t0, t0 + rows * 10_000)

    def catalog(self, units: dict[str, str | None]) -> wire.Batch:
        """A catalog batch naming each tag's unit (the other catalogue columns filled in plausibly)."""
        tags = sorted(units)
        rows = [[i, units[t], "float", f"{t} reading", 1.0, 0.0, 0.0, 100.0, "shaft 3"] for i, t in enumerate(tags)]
        t0 = T0 + self.seq * 100_000
        return self._next("catalog", wire.encode_body(tags, {"catalog": wire.Table(CATALOG_COLUMNS, rows)}, t0),
                          t0, t0)

    def gap(self, first: int, last: int, *, records: int = 0, reason: str = "buffer_full") -> wire.Batch:
        """A gap batch declaring seqs ``first..last`` evicted on the gateway."""
        row = [first, last, last - first + 1, records, T0, T0 + 1000, reason, ["plc1.ch4"], 0]
        body = wire.encode_body([], {"gap": wire.Table(GAP_COLUMNS, [row])}, T0)
        return self._next("gap", body, T0, T0 + 1000)


    def outage(self, *rows: list[object]) -> wire.Batch:
        """A gap batch carrying only an ``outage`` table of ``rows`` (from_ms, to_ms, reason, tags; the
        columns after those are 0)."""
        times = [t for r in rows for t in r[:2] if isinstance(t, int)] or [T0]
        t0, t1 = min(times), max(times)
        body = wire.encode_body([], {"outage": wire.Table(OUTAGE_COLUMNS, [_padded(r) for r in rows])}, t0)
        return self._next("gap", body, t0, t1)


def _padded(row: list[object]) -> list[object]:
    return [*row, *[0] * (len(OUTAGE_COLUMNS) - len(row))]


def register(store: ReceiverStore, signer: BatchSigner, gw: str = "gw-01", **validity: int) -> None:
    """Register ``signer``'s key for ``gw`` in the store's key registry (valid since always, by default)."""
    store.registry.register(entry_for(gw, signer.public_text, **validity), now_ms=0)


class WallClock:
    """The receiver's clock, set by the test: arrival times are what revocation is judged by."""

    def __init__(self, ms: int) -> None:
        self.ms = ms

    def time(self) -> float:
        return self.ms / 1000

    def monotonic(self) -> float:
        return self.ms / 1000

    async def sleep(self, seconds: float) -> None:  # pragma: no cover - the store never sleeps
        raise NotImplementedError
