"""The one resilience policy for every D365 call: pure decisions, no I/O (the transport does the waiting).

Rules (the project's policy, ref §2 and peers §5):

* **429** is always safe to retry, even for POST: D365 refused the request before doing any work. Its
  ``Retry-After`` (seconds or an HTTP-date) is honoured, capped at ``retry_after_cap``. Throttles have their
  own, larger budget (``max_throttle_attempts``) and do not use up ``max_attempts``, so a 429 storm ends in
  success rather than in lost operations whenever the total deadline allows. When the wait would pass the
  deadline, the call stops at once (the caller sees ``D365ThrottledError.retry_after``) instead of sleeping
  into a timeout.
* **5xx in ``retry_statuses`` and network errors** back off exponentially with jitter, but only when the
  request is idempotent, because D365 may already have done the work. A ``Retry-After`` on such an answer
  (503) is honoured instead of the backoff. Failures to *connect* are the exception: nothing was sent, so
  every request may be retried.
* **Other 4xx** are never retried (the single 401 token refresh is the transport's business, not a retry).
* Every decision respects ``total_timeout``: the policy never asks for a sleep that ends past the deadline.

``RetryPolicy`` is an immutable value (like urllib3's ``Retry``); one instance is shared by all threads and
the caller carries the per-call counters. Use ``dataclasses.replace`` to derive variants and
``RetryPolicy.from_settings(settings.http)`` to build it from the app settings.
"""

from __future__ import annotations

import enum
import math
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any, Literal, Protocol

__all__ = [
    "IDEMPOTENT_METHODS",
    "Decision",
    "ErrorKind",
    "Jitter",
    "RetryPolicy",
    "RetrySettings",
    "is_idempotent",
    "parse_retry_after",
]

Jitter = Literal["full", "equal", "decorrelated", "none"]

#: Methods whose repetition cannot duplicate work (RFC 9110 §9.2.2).
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})


class ErrorKind(enum.Enum):
    """Where a network failure happened, which decides whether the request may have reached D365."""

    CONNECT = "connect"  # refused, DNS, connect timeout, TLS handshake: nothing was sent
    DROPPED = "dropped"  # reset or closed after the request was (partly) sent, before any answer
    READ_TIMEOUT = "read_timeout"  # sent, no answer in time
    TRUNCATED = "truncated"  # the answer started, then the body was cut off
    FATAL = "fatal"  # never retried (e.g. certificate verification failed): retrying cannot help

    @property
    def request_sent(self) -> bool:
        return self is not ErrorKind.CONNECT


@dataclass(frozen=True)
class Decision:
    """What to do after one attempt: ``retry`` after ``delay`` seconds, and why (also a stats key)."""

    retry: bool
    delay: float
    reason: str


def is_idempotent(
    method: str, headers: Mapping[str, str] | None = None, explicit: bool | None = None
) -> bool:
    """Whether repeating the request cannot duplicate work.

    ``explicit`` (the caller's knowledge) wins; otherwise the method decides, and a PATCH guarded by
    ``If-Match`` counts as idempotent because a repeat after success fails the ETag check instead of
    applying twice.
    """
    if explicit is not None:
        return explicit
    verb = method.upper()
    if verb in IDEMPOTENT_METHODS:
        return True
    if verb == "PATCH" and headers:
        return any(name.lower() == "if-match" for name in headers)
    return False


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` value (delta-seconds or HTTP-date); None when absent or garbage.

    Fractional seconds are accepted although the RFC only allows integers; dates in the past give 0.
    ``now`` is the wall-clock epoch time used for HTTP-dates (injectable for tests).
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if math.isfinite(seconds) else None
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # RFC 9110 dates are GMT; treat a naive result the same way
        return None
    current = time.time() if now is None else now
    return max(0.0, when.timestamp() - current)


class RetrySettings(Protocol):
    """The fields ``shared.settings.HttpSettings`` carries (typed here so retry.py imports no settings)."""

    @property
    def retry_max_attempts(self) -> int: ...
    @property
    def retry_max_seconds(self) -> float: ...
    @property
    def retry_after_cap_seconds(self) -> float: ...
    @property
    def backoff_base_seconds(self) -> float: ...
    @property
    def backoff_max_seconds(self) -> float: ...


@dataclass(frozen=True)
class RetryPolicy:
    """Bounds and backoff for one logical D365 call (all attempts, sleeps and throttling waits)."""

    max_attempts: int = 6  # attempts that ended in a 5xx/network error, plus the final one; 429s excluded
    max_throttle_attempts: int = 50  # 429s one call may retry after; the deadline usually binds first
    total_timeout: float = 300.0  # seconds for the whole call, sleeps included
    backoff_base: float = 0.5
    backoff_max: float = 30.0
    retry_after_cap: float = 120.0
    jitter: Jitter = "full"
    retry_statuses: frozenset[int] = field(default_factory=lambda: frozenset({408, 429, 500, 502, 503, 504}))

    def __post_init__(self) -> None:
        if self.max_attempts < 1 or self.max_throttle_attempts < 0:
            raise ValueError("max_attempts must be >= 1 and max_throttle_attempts >= 0")
        if not self.total_timeout > 0:
            raise ValueError("total_timeout must be > 0")
        if self.backoff_base < 0 or self.backoff_max < self.backoff_base or self.retry_after_cap < 0:
            raise ValueError("need 0 <= backoff_base <= backoff_max and retry_after_cap >= 0")
        if self.jitter not in ("full", "equal", "decorrelated", "none"):
            raise ValueError(f"unknown jitter {self.jitter!r}")
        object.__setattr__(self, "retry_statuses", frozenset(self.retry_statuses))

    @classmethod
    def from_settings(cls, settings: RetrySettings, **overrides: Any) -> RetryPolicy:
        """The policy an app configures (``D365_RETRY_*`` app settings); ``overrides`` set other fields."""
        return cls(
            max_attempts=settings.retry_max_attempts,
            total_timeout=settings.retry_max_seconds,
            retry_after_cap=settings.retry_after_cap_seconds,
            backoff_base=settings.backoff_base_seconds,
            backoff_max=settings.backoff_max_seconds,
            **overrides,
        )

    def backoff(self, failures: int, *, previous_delay: float = 0.0, rand: float | None = None) -> float:
        """Delay before retry number ``failures`` (1-based) of an error, jittered per ``self.jitter``."""
        ceiling = min(self.backoff_max, self.backoff_base * 2.0 ** min(max(0, failures - 1), 60))
        sample = random.random() if rand is None else rand
        if self.jitter == "none":
            return ceiling
        if self.jitter == "equal":
            return ceiling / 2 + sample * ceiling / 2
        if self.jitter == "decorrelated":
            low = self.backoff_base
            high = max(low, previous_delay * 3)
            return min(self.backoff_max, low + sample * (high - low))
        return sample * ceiling

    def decide(
        self,
        *,
        attempts: int,
        throttled: int = 0,
        status: int | None = None,
        error: ErrorKind | None = None,
        retry_after: float | None = None,
        idempotent: bool,
        elapsed: float,
        previous_delay: float = 0.0,
        rand: float | None = None,
    ) -> Decision:
        """Decide after a failed attempt: give exactly one of ``status`` (the answer) or ``error``.

        ``attempts`` counts every attempt so far including this one, ``throttled`` how many of them were
        429s (this one included), ``elapsed`` the seconds since the call began.
        """
        if (status is None) == (error is None):
            raise ValueError("give exactly one of status or error")
        if status == 429:
            if 429 not in self.retry_statuses:
                return Decision(False, 0.0, "status_429_not_retried")
            if throttled > self.max_throttle_attempts:
                return Decision(False, 0.0, "throttle_attempts_exhausted")
            if retry_after is not None:
                delay = min(retry_after, self.retry_after_cap)
            else:  # D365 documents Retry-After on every 429; without one, back off but never hammer
                wait = self.backoff(throttled, previous_delay=previous_delay, rand=rand)
                delay = max(self.backoff_base, wait)
            return self._within_deadline(delay, elapsed, "throttled")

        if status is not None:
            reason = f"status_{status}"
            if status not in self.retry_statuses:
                return Decision(False, 0.0, f"{reason}_not_retryable")
            if not idempotent:
                return Decision(False, 0.0, f"{reason}_not_idempotent")
        else:
            assert error is not None
            reason = error.value
            if error is ErrorKind.FATAL:
                return Decision(False, 0.0, "fatal")
            if error.request_sent and not idempotent:
                return Decision(False, 0.0, f"{reason}_not_idempotent")

        failures = attempts - throttled
        if failures >= self.max_attempts:
            return Decision(False, 0.0, "attempts_exhausted")
        if retry_after is not None:
            delay = min(retry_after, self.retry_after_cap)
        else:
            delay = self.backoff(failures, previous_delay=previous_delay, rand=rand)
        return self._within_deadline(delay, elapsed, reason)

    def _within_deadline(self, delay: float, elapsed: float, reason: str) -> Decision:
        if elapsed + delay >= self.total_timeout:
            return Decision(False, delay, "deadline")
        return Decision(True, delay, reason)
