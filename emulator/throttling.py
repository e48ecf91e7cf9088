"""Service protection API limits (ref §2): user-based sliding-window limits per (object id, client id)
and a resource-based "high utilization" switch. Pure model with an injectable clock; the D365 gate
calls ``admit`` before a request and ``release`` after it.

All limits are off by default so ordinary tests are never throttled; the admin API turns them on.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

# Exact texts from ref §2.3 (the limit values are filled in from the configuration).
MSG_REQUESTS = "Number of requests exceeded the limit of {limit} over the time window of {window} seconds."
MSG_EXECUTION = (
    "Combined execution time of incoming requests exceeded the limit of {limit} seconds over the time window "
    "of {window} seconds. Decrease the number of concurrent requests or reduce the duration of requests and "
    "try again later."
)
MSG_CONCURRENCY = "Number of concurrent requests exceeded the limit of {limit}."
MSG_RESOURCE = (
    "This request could not be processed at this time due to system experiencing high resource utilization."
)


def _num(value: float) -> str:
    """6000 not 6000.0 in messages; fractional values (short test windows) kept as they are."""
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


@dataclass
class LimitSettings:
    """Defaults are D365's published values (ref §2.2); every limit starts disabled."""

    window_seconds: float = 300.0
    requests_enabled: bool = False
    max_requests: int = 6000
    execution_enabled: bool = False
    max_execution_seconds: float = 1200.0
    concurrency_enabled: bool = False
    max_concurrent: int = 52
    # "Continued demanding requests extend the interval" (ref §2.3): a request that arrives well before the
    # Retry-After announced to its key has elapsed is rejected AND counted in the request window.
    penalize_early_retries: bool = True

    @property
    def user_based_enabled(self) -> bool:
        return self.requests_enabled or self.execution_enabled or self.concurrency_enabled


@dataclass
class ResourcePressure:
    """Resource-based throttling: every caller gets 429 for the next N requests and/or until a time."""

    next_requests: int = 0
    until: float = 0.0  # clock value
    retry_after_seconds: int = 1  # what count-based rejections announce (UNCONFIRMED real value)


@dataclass(frozen=True)
class Rejection:
    kind: str  # requests | execution_time | concurrency | resource
    message: str
    retry_after: int  # whole seconds, at least 1


@dataclass
class _KeyWindow:
    arrivals: deque[float] = field(default_factory=deque)  # counted request start times
    executions: deque[tuple[float, float]] = field(default_factory=deque)  # (finished at, duration)
    execution_total: float = 0.0
    in_flight: int = 0
    # The earliest Retry-After moment announced since the key last had capacity: every well-behaved
    # worker of the key comes back at or after it, so a rejected request well before it is a retry storm.
    retry_floor: float = 0.0

    def prune(self, horizon: float) -> None:
        arrivals = self.arrivals
        while arrivals and arrivals[0] <= horizon:
            arrivals.popleft()
        executions = self.executions
        while executions and executions[0][0] <= horizon:
            self.execution_total -= executions.popleft()[1]
        if not executions:
            self.execution_total = 0.0


@dataclass
class Admission:
    """A request let through; hand it back to ``release`` when the response is done."""

    window: _KeyWindow | None
    started: float


_PASS = Admission(window=None, started=0.0)


class ServiceProtection:
    """Thread-safe; the lock is held only for bookkeeping, never across an await."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self.settings = LimitSettings()
        self.resource = ResourcePressure()
        self._windows: dict[str, _KeyWindow] = {}
        self.rejections: dict[str, int] = {}

    # -- configuration ---------------------------------------------------------------------------

    @property
    def active(self) -> bool:
        """False when nothing can throttle: the gate then skips this module entirely."""
        resource = self.resource
        return (
            self.settings.user_based_enabled
            or resource.next_requests > 0
            or (resource.until > 0 and self._clock() < resource.until)
        )

    def reset(self) -> None:
        with self._lock:
            self.settings = LimitSettings()
            self.resource = ResourcePressure()
            self._windows.clear()
            self.rejections.clear()

    def to_json(self) -> dict[str, Any]:
        s, r = self.settings, self.resource
        remaining = max(0.0, r.until - self._clock()) if r.until else 0.0
        return {
            "window_seconds": s.window_seconds,
            "requests": {"enabled": s.requests_enabled, "limit": s.max_requests},
            "execution_time": {"enabled": s.execution_enabled, "limit_seconds": s.max_execution_seconds},
            "concurrency": {"enabled": s.concurrency_enabled, "limit": s.max_concurrent},
            "penalize_early_retries": s.penalize_early_retries,
            "resource": {
                "next_requests": r.next_requests,
                "for_seconds": round(remaining, 3),
                "retry_after_seconds": r.retry_after_seconds,
            },
            "rejections": dict(self.rejections),
        }

    def update(self, body: dict[str, Any]) -> None:
        """Apply a partial ``PUT /_emulator/limits`` body (same shape as ``to_json``); ValueError if bad."""
        with self._lock:
            s = self.settings
            if "window_seconds" in body:
                s.window_seconds = _positive(body["window_seconds"], "window_seconds")
            if "penalize_early_retries" in body:
                s.penalize_early_retries = bool(body["penalize_early_retries"])
            for name, enabled_attr, limit_attr, limit_key, cast in (
                ("requests", "requests_enabled", "max_requests", "limit", int),
                ("execution_time", "execution_enabled", "max_execution_seconds", "limit_seconds", float),
                ("concurrency", "concurrency_enabled", "max_concurrent", "limit", int),
            ):
                part = body.get(name)
                if part is None:
                    continue
                if not isinstance(part, dict):
                    raise ValueError(f"'{name}' must be an object")
                if "enabled" in part:
                    setattr(s, enabled_attr, bool(part["enabled"]))
                if limit_key in part:
                    setattr(s, limit_attr, cast(_positive(part[limit_key], f"{name}.{limit_key}")))
            resource = body.get("resource")
            if resource is not None:
                if not isinstance(resource, dict):
                    raise ValueError("'resource' must be an object")
                if "retry_after_seconds" in resource:
                    self.resource.retry_after_seconds = max(1, int(resource["retry_after_seconds"]))
                if "next_requests" in resource:
                    self.resource.next_requests = max(0, int(resource["next_requests"]))
                if "for_seconds" in resource:
                    seconds = float(resource["for_seconds"])
                    self.resource.until = self._clock() + seconds if seconds > 0 else 0.0
            if not s.user_based_enabled:
                self._windows.clear()

    # -- per request -----------------------------------------------------------------------------

    def admit(self, key: str) -> Admission | Rejection:
        """Decide on one request of ``key`` (Principal.throttle_key); checks resource, concurrency,
        request count, then execution time."""
        now = self._clock()
        with self._lock:
            rejection = self._resource_rejection(now)
            if rejection is None and self.settings.user_based_enabled:
                window = self._windows.get(key)
                if window is None:
                    window = self._windows[key] = _KeyWindow()
                rejection = self._user_rejection(window, now)
                if rejection is None:
                    window.retry_floor = 0.0  # capacity was there: the throttled episode is over
                    window.arrivals.append(now)
                    window.in_flight += 1
                    return Admission(window=window, started=now)
            if rejection is not None:
                self.rejections[rejection.kind] = self.rejections.get(rejection.kind, 0) + 1
                return rejection
            return _PASS

    def release(self, admission: Admission) -> None:
        """The request finished: record its execution time and free its concurrency slot."""
        window = admission.window
        if window is None:
            return
        now = self._clock()
        with self._lock:
            window.in_flight = max(0, window.in_flight - 1)
            duration = max(0.0, now - admission.started)
            window.executions.append((now, duration))
            window.execution_total += duration

    def _resource_rejection(self, now: float) -> Rejection | None:
        resource = self.resource
        if resource.next_requests > 0:
            resource.next_requests -= 1
            return Rejection("resource", MSG_RESOURCE, resource.retry_after_seconds)
        if resource.until and now < resource.until:
            return Rejection("resource", MSG_RESOURCE, max(1, math.ceil(resource.until - now)))
        return None

    def _user_rejection(self, window: _KeyWindow, now: float) -> Rejection | None:
        s = self.settings
        length = s.window_seconds
        window.prune(now - length)
        win = _num(length)
        if s.concurrency_enabled and window.in_flight >= s.max_concurrent:
            # Nothing tells when a slot frees; 1 s is the shortest honest answer.
            return Rejection("concurrency", MSG_CONCURRENCY.format(limit=s.max_concurrent), 1)
        # Early = more than the 1 s Retry-After granularity before the earliest announced moment.
        early = window.retry_floor > 0 and now < window.retry_floor - 1.0
        if s.requests_enabled and len(window.arrivals) >= s.max_requests:
            if early and s.penalize_early_retries:
                window.arrivals.append(now)
            arrivals = window.arrivals
            # The count drops below the limit once the oldest (len - limit + 1) arrivals leave the window.
            free_at = arrivals[len(arrivals) - s.max_requests] + length
            return self._block(
                window, now, free_at, "requests", MSG_REQUESTS.format(limit=s.max_requests, window=win)
            )
        if s.execution_enabled and window.execution_total >= s.max_execution_seconds:
            if early and s.penalize_early_retries and s.requests_enabled:
                window.arrivals.append(now)
            remaining = window.execution_total
            free_at = now + length
            for finished, duration in window.executions:
                remaining -= duration
                if remaining < s.max_execution_seconds:
                    free_at = finished + length
                    break
            message = MSG_EXECUTION.format(limit=_num(s.max_execution_seconds), window=win)
            return self._block(window, now, free_at, "execution_time", message)
        return None

    @staticmethod
    def _block(window: _KeyWindow, now: float, free_at: float, kind: str, message: str) -> Rejection:
        retry_after = max(1, math.ceil(free_at - now))
        moment = now + retry_after
        if window.retry_floor == 0.0 or moment < window.retry_floor:
            window.retry_floor = moment
        return Rejection(kind, message, retry_after)


def _positive(value: Any, name: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"'{name}' must be a number") from None
    if not number > 0:
        raise ValueError(f"'{name}' must be greater than 0")
    return number
