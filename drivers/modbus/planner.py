"""Plan the fewest read requests that cover a device's tags.

Why: every request costs a round trip (2-20 ms to a PLC over TCP, and on RS-485 8 request bytes, 5 response
bytes of framing, two 3.5-character silences and the device's turnaround), while one more register costs only
2 bytes. Reading 300 tags one by one would take 300 round trips; planned, they take a handful.

The rule, per poll group (tags with the same poll interval) and per table (function code):

1. Sort the tags by address. A tag always lies wholly inside one request.
2. Start a request at the first tag not yet covered. Extend it with the next tag while
   (a) the request would stay within the limit: 125 registers / 2000 bits (Modbus spec, Application
       Protocol V1.1b3 §6.3/6.1), or the device's lower ``max_registers_per_request`` /
       ``max_bits_per_request``; and
   (b) the unused stretch between the request's end and the tag is at most ``max_gap_registers``
       (``max_gap_bits`` for coils and discrete inputs). Reading a small gap is cheaper than a request.
3. Otherwise close the request and start the next one at that tag.

This greedy sweep is optimal for the number of requests: any plan must split where the gap is too large,
and extending each request as far as the limit allows never forces an extra request later (the classic
interval-covering exchange argument). Overlapping tags (two views of one register) are fine.

The alternative rejected: merging only adjacent registers (no gap filling) needs 2-5x the requests on a
typical sparse PLC map (see ``bench/modbus_planner.py``). The risk of gap filling is a device that answers
"illegal data address" for a register inside the gap; the driver then re-plans that request with no gaps,
or else tag by tag (:meth:`RegisterPlanner.split`), so one bad assumption costs one request, once.
"""

from __future__ import annotations

__all__ = ["ReadRequest", "RegisterPlanner", "TagSpan"]

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

MAX_REGISTERS = 125
MAX_BITS = 2000
BIT_TABLES = ("coil", "discrete")
FUNCTION_CODE = {"coil": 1, "discrete": 2, "holding": 3, "input": 4}


@dataclass(frozen=True, slots=True)
class TagSpan:
    """What the planner needs of a tag: its table, first address and how many registers (or bits)."""

    key: object  # anything that identifies the tag to the caller
    table: str
    address: int
    count: int


@dataclass(frozen=True, slots=True)
class ReadRequest:
    """One read: ``count`` registers/bits of ``table`` from ``address``, covering ``tags``."""

    table: str
    address: int
    count: int
    tags: tuple[TagSpan, ...]

    @property
    def function_code(self) -> int:
        return FUNCTION_CODE[self.table]


class RegisterPlanner:
    """Fewest requests under the per-request limits and the gap rule (see module docstring)."""

    def __init__(
        self,
        *,
        max_registers: int = MAX_REGISTERS,
        max_bits: int = MAX_BITS,
        max_gap_registers: int = 8,
        max_gap_bits: int = 64,
    ) -> None:
        if not 1 <= max_registers <= MAX_REGISTERS:
            raise ValueError(f"max_registers must be 1-{MAX_REGISTERS}, not {max_registers}")
        if not 1 <= max_bits <= MAX_BITS:
            raise ValueError(f"max_bits must be 1-{MAX_BITS}, not {max_bits}")
        if max_gap_registers < 0 or max_gap_bits < 0:
            raise ValueError("gaps cannot be negative")
        self.max_registers = max_registers
        self.max_bits = max_bits
        self.max_gap_registers = max_gap_registers
        self.max_gap_bits = max_gap_bits

    def plan(self, spans: Iterable[TagSpan]) -> list[ReadRequest]:
        """Requests ordered by table (coil, discrete, holding, input) then address."""
        by_table: dict[str, list[TagSpan]] = {}
        for span in spans:
            by_table.setdefault(span.table, []).append(span)
        requests: list[ReadRequest] = []
        for table in sorted(by_table, key=FUNCTION_CODE.__getitem__):
            bits = table in BIT_TABLES
            limit = self.max_bits if bits else self.max_registers
            gap = self.max_gap_bits if bits else self.max_gap_registers
            requests.extend(self._plan_table(table, by_table[table], limit, gap))
        return requests

    def split(self, request: ReadRequest) -> list[ReadRequest]:
        """Re-plan a request the device refused with "illegal data address".

        First without gaps (a register in a gap may be undefined); if that changes nothing, one request per
        tag (a device may refuse to read across the boundary of two defined blocks), so that only the tag
        that is really wrong stays bad. A request for a single tag comes back unchanged.
        """
        limit = self.max_bits if request.table in BIT_TABLES else self.max_registers
        gap_free = self._plan_table(request.table, list(request.tags), limit, 0)
        if len(gap_free) > 1:
            return gap_free
        by_span: dict[tuple[int, int], list[TagSpan]] = {}
        for span in sorted(request.tags, key=lambda s: (s.address, s.count)):
            by_span.setdefault((span.address, span.count), []).append(span)
        return [ReadRequest(request.table, a, c, tuple(spans)) for (a, c), spans in by_span.items()]

    @staticmethod
    def _plan_table(table: str, spans: Sequence[TagSpan], limit: int, gap: int) -> list[ReadRequest]:
        ordered = sorted(spans, key=lambda s: (s.address, s.count))
        requests: list[ReadRequest] = []
        start = end = -1
        members: list[TagSpan] = []
        for span in ordered:
            if span.count > limit:
                raise ValueError(f"a tag at {table} {span.address} spans {span.count}, more than {limit}")
            span_end = span.address + span.count
            if members and span.address - end <= gap and max(end, span_end) - start <= limit:
                members.append(span)
                end = max(end, span_end)
                continue
            if members:
                requests.append(ReadRequest(table, start, end - start, tuple(members)))
            start, end, members = span.address, span_end, [span]
        if members:
            requests.append(ReadRequest(table, start, end - start, tuple(members)))
        return requests
