"""The time limit of one populate run (a file or an HTTP request): no call is started, and no wait begun,
that cannot end before it; what is left is reported ``not_attempted`` (sending it again is safe)."""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["Deadline", "OutOfTime"]


class OutOfTime(Exception):
    """The run's time limit leaves no room for the next call or wait."""


class Deadline:
    def __init__(
        self, seconds: float | None, *, clock: Callable[[], float] = time.monotonic, margin: float = 1.0
    ) -> None:
        self.seconds = seconds
        self._clock = clock
        self._end = None if seconds is None else clock() + seconds
        self.margin = margin  # a call needs at least this much time left

    def remaining(self) -> float:
        return float("inf") if self._end is None else self._end - self._clock()

    def call_budget(self) -> float | None:
        """Raise ``OutOfTime`` unless a call has room; else the most it may take (waits and retries
        included) so it ends by the limit (None: no limit). One clock reading for both."""
        if self._end is None:
            return None
        left = self._end - self._clock()
        if left < self.margin:
            raise OutOfTime(self.reason)
        return max(left - self.margin, 0.5)

    def check(self, needed: float = 0.0) -> None:
        """Raise ``OutOfTime`` unless ``needed`` seconds (plus the margin) are left."""
        if self.remaining() < needed + self.margin:
            raise OutOfTime(self.reason)

    @property
    def reason(self) -> str:
        return f"the run's time limit of {self.seconds:g} s ran out before it was written"
