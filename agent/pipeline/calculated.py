"""Calculated tags: a fixed set of operations over named tags, declared in TOML, never code.

Technicians most often ask for a sum (two pumps' flow), a difference (inlet minus outlet pressure), a unit
conversion (``value * factor + offset``) and a running total (the integral of a flow). Those, plus mean,
min and max, are all there is: no expressions, no ``eval``, so a configuration pushed from afar cannot run
code on the gateway, and every result is explained by one line of configuration.

A calculated tag is named ``calc.<name>`` and is produced as an ordinary sample: it is aggregated, can be
sent raw, and can carry alarm rules. It is computed once per burst of input samples (one driver poll), at
the latest input timestamp, from the latest value of each input (sample-and-hold):

* all inputs good and fresh: the result, good;
* an input bad, uncertain, non-numeric, or older than ``max_age_s`` than the burst: a bad sample whose
  ``reason`` names the input, so the gap is visible instead of a silently wrong sum;
* an input never seen yet: nothing (there is nothing to say before every input has reported once).

``integral`` accumulates ``factor * value * seconds`` with the same sample-and-hold rule as the window TWA
(a good value holds until the input's next sample); its total starts at 0 when the agent (re)starts, so a
backend that needs a lifetime total adds up the windows' ``last`` values per restart.
"""

from __future__ import annotations

__all__ = ["CALC_DEVICE", "OPERATIONS", "Calculation"]

import math
from collections.abc import Sequence
from typing import Any

from agent.core.sample import Quality, Sample

CALC_DEVICE = "calc"
OPERATIONS = ("sum", "difference", "mean", "min", "max", "scale", "integral")


class Calculation:
    """One calculated tag: the latest input values and, for ``integral``, the running total."""

    __slots__ = ("factor", "inputs", "integral_hold", "latest", "max_age_ms", "name", "offset", "op", "total")

    def __init__(
        self,
        name: str,
        op: str,
        inputs: Sequence[str],
        *,
        factor: float = 1.0,
        offset: float = 0.0,
        max_age_s: float = 60.0,
    ) -> None:
        if op not in OPERATIONS:
            raise ValueError(f"unknown operation {op!r}")
        self.name = name if "." in name else f"{CALC_DEVICE}.{name}"
        self.op = op
        self.inputs = list(inputs)
        self.factor = factor
        self.offset = offset
        self.max_age_ms = round(max_age_s * 1000)
        self.latest: dict[str, tuple[int, Any, int]] = {}  # input -> (ts, value, quality)
        self.total = 0.0
        self.integral_hold: tuple[int, float | None] | None = None

    def observe(self, tag: str, ts: int, value: Any, quality: int) -> None:
        """An input sample (the pipeline's hot loop calls this for inputs only)."""
        seen = self.latest.get(tag)
        if seen is None or ts >= seen[0]:
            self.latest[tag] = (ts, value, quality)
        if self.op == "integral":
            self._integrate(ts, value if quality == 0 and _finite(value) else None)

    def _integrate(self, ts: int, value: float | None) -> None:
        hold = self.integral_hold
        if hold is not None:
            since, held = hold
            if ts < since:
                return
            if held is not None:
                self.total += self.factor * held * (ts - since) / 1000.0
        self.integral_hold = (ts, value)

    def compute(self) -> Sample | None:
        """The result at the latest input time, or None before every input has reported."""
        latest = self.latest
        if len(latest) < len(self.inputs):
            return None
        ts = max(seen[0] for seen in latest.values())
        values: list[float] = []
        for tag in self.inputs:
            seen_ts, value, quality = latest[tag]
            if quality != 0 or not _finite(value):
                return Sample(self.name, ts, None, Quality.BAD, f"input {tag} is not good")
            if ts - seen_ts > self.max_age_ms:
                return Sample(self.name, ts, None, Quality.BAD, f"input {tag} is stale")
            values.append(float(value))
        try:
            result = self._apply(values)
        except OverflowError:  # math.fsum of huge finite values
            result = math.inf
        if not math.isfinite(result):
            # Finite inputs, no finite result (e.g. 1e308 + 1e308): a bad sample with the reason, not an
            # infinity in the statistics or an exception in the drivers' sink.
            return Sample(self.name, ts, None, Quality.BAD, "result out of range")
        return Sample(self.name, ts, result, Quality.GOOD, None)

    def _apply(self, values: list[float]) -> float:
        op = self.op
        if op == "sum":
            return math.fsum(values)
        if op == "difference":
            return values[0] - values[1]
        if op == "mean":
            return math.fsum(values) / len(values)
        if op == "min":
            return min(values)
        if op == "max":
            return max(values)
        if op == "scale":
            return values[0] * self.factor + self.offset
        return self.total  # integral: the total up to the latest input sample


def _finite(value: Any) -> bool:
    kind = type(value)
    if kind is float:
        return math.isfinite(value)
    return kind is int or kind is bool
