"""Poll a unit that stopped answering less often, so it cannot slow down the healthy units on its bus.

Why: on a shared RS-485 line or gateway, requests go one at a time. A dead unit costs its full timeout
(``timeout_s * (retries + 1)``) on every poll, time in which no other unit on the line can be read. After
``failures_before_backoff`` consecutive unanswered polls the unit is skipped, and tried again after a delay
that doubles up to ``backoff_max_s``; one answer returns it to its normal poll interval. Exception responses
do not count: a unit that answers with an exception is alive and costs no timeout.

No jitter here: the units on one line are polled one after another anyway, so there is no herd to spread,
and a deterministic schedule is easier to reason about in the field ("it is tried every 60 s").
"""

from __future__ import annotations

__all__ = ["UnitBackoff"]


class UnitBackoff:
    """When the next poll of one unit is allowed; times are the caller's monotonic seconds."""

    def __init__(self, *, failures_before_backoff: int, initial_s: float, maximum_s: float) -> None:
        if failures_before_backoff < 1 or initial_s <= 0 or maximum_s < initial_s:
            raise ValueError("need failures_before_backoff >= 1 and 0 < initial_s <= maximum_s")
        self.failures_before_backoff = failures_before_backoff
        self.initial_s = initial_s
        self.maximum_s = maximum_s
        self.failures = 0
        self.next_try_at = float("-inf")
        self.delay_s = 0.0

    @property
    def backing_off(self) -> bool:
        return self.failures >= self.failures_before_backoff

    def may_poll(self, now: float) -> bool:
        """True unless the unit is backing off and its next try is not due yet."""
        return now >= self.next_try_at

    def record_success(self) -> None:
        self.failures = 0
        self.delay_s = 0.0
        self.next_try_at = float("-inf")

    def record_failure(self, now: float) -> None:
        """An unanswered poll at ``now``: maybe start, or lengthen, the backoff."""
        self.failures += 1
        if self.failures < self.failures_before_backoff:
            return
        self.delay_s = self.initial_s if self.delay_s == 0 else min(self.maximum_s, self.delay_s * 2)
        self.next_try_at = now + self.delay_s
