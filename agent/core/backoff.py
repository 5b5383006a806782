"""Capped exponential backoff with jitter, used by every reconnect loop.

Why jitter: after a mine-wide network outage every gateway and every device supervisor reconnects at once;
full jitter spreads them so the broker and the serial servers are not hit in lock-step. Why a cap: a device
that was unplugged for a day must be found again within ``maximum`` seconds of being plugged back in.
"""

from __future__ import annotations

__all__ = ["Backoff"]

import random


class Backoff:
    """Delays ``initial``, ``initial*factor``, ... up to ``maximum``, each scaled by a random factor in
    ``[1-jitter, 1]``. :meth:`reset` after a success starts again from ``initial``.
    """

    def __init__(
        self,
        initial: float = 0.5,
        maximum: float = 30.0,
        *,
        factor: float = 2.0,
        jitter: float = 0.2,
        rng: random.Random | None = None,
    ) -> None:
        if initial <= 0 or maximum < initial or factor < 1 or not 0 <= jitter < 1:
            raise ValueError("backoff needs 0 < initial <= maximum, factor >= 1, 0 <= jitter < 1")
        self.initial = initial
        self.maximum = maximum
        self.factor = factor
        self.jitter = jitter
        self._rng = rng or random.Random()
        self._attempt = 0

    @property
    def attempt(self) -> int:
        """How many delays were handed out since the last reset."""
        return self._attempt

    def next(self) -> float:
        base = min(self.maximum, self.initial * self.factor**self._attempt)
        self._attempt += 1
        return base * (1.0 - self.jitter * self._rng.random())

    def reset(self) -> None:
        self._attempt = 0
