"""Counters of what the transport did (calls, attempts, retries by reason, waits), safe across threads."""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

__all__ = ["TransportStats"]


class TransportStats:
    """Counters for operators and benchmarks; ``snapshot()`` returns a consistent copy."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.calls = 0
        self.attempts = 0
        self.retries: Counter[str] = Counter()
        self.failures: Counter[str] = Counter()  # calls that raised, by error class name
        self.token_refreshes = 0
        self.slept_seconds = 0.0
        self.throttled_seconds = 0.0  # part of slept_seconds spent waiting out 429s

    def add(self, **amounts: float) -> None:
        with self._lock:
            for name, amount in amounts.items():
                setattr(self, name, getattr(self, name) + amount)

    def count(self, counter: str, key: str) -> None:
        with self._lock:
            getattr(self, counter)[key] += 1

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "calls": self.calls,
                "attempts": self.attempts,
                "retries": dict(self.retries),
                "failures": dict(self.failures),
                "token_refreshes": self.token_refreshes,
                "slept_seconds": self.slept_seconds,
                "throttled_seconds": self.throttled_seconds,
            }
