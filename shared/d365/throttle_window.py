"""Sustained throttling: enough 429 answers within a sliding window, counted per transport (no I/O).

``D365_THROTTLED`` is about one call. Throttling spread over many calls — each sleeping once or twice on a
``Retry-After`` — never makes one call reach that event's threshold, so the transport also counts every 429
it receives here and logs ``D365_THROTTLING_SUSTAINED`` when ``count`` of them fell within ``seconds``; at
most once per window, so a day of throttling is one line per window, not one per answer.
"""

from __future__ import annotations

import math
import threading
from collections import deque

__all__ = ["DEFAULT_ALERT_COUNT", "DEFAULT_ALERT_SECONDS", "ThrottleWindow"]

#: 429 answers on one transport (= one instance's calls to one D365 environment) that make throttling
#: "sustained" when they fall within DEFAULT_ALERT_SECONDS. The shared throttle gate keeps a burst of
#: parallel calls to about one 429 each, so ten within five minutes is throttling that keeps coming back.
DEFAULT_ALERT_COUNT = 10
DEFAULT_ALERT_SECONDS = 300.0


class ThrottleWindow:
    """Thread-safe: ``record`` may be called from many threads sharing one transport."""

    def __init__(self, count: int = DEFAULT_ALERT_COUNT, seconds: float = DEFAULT_ALERT_SECONDS) -> None:
        if count < 1 or not seconds > 0:
            raise ValueError("a throttle window needs count >= 1 and seconds > 0")
        self.count = count
        self.seconds = seconds
        self._lock = threading.Lock()
        self._seen: deque[float] = deque(maxlen=count)  # the latest `count` 429s: bounded memory
        self._quiet_until = -math.inf

    def record(self, now: float) -> bool:
        """Count one 429 seen at ``now`` (a monotonic clock); True when it completes ``count`` answers
        within ``seconds`` and no event was due in the last ``seconds``: the caller logs one event."""
        with self._lock:
            self._seen.append(now)
            full = len(self._seen) == self.count and now - self._seen[0] <= self.seconds
            if not full or now < self._quiet_until:
                return False
            self._quiet_until = now + self.seconds
            return True
