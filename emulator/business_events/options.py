"""Admin-tunable options of business event delivery: the "Business events parameters"
(``DeliverySettings``) and the fault options (``DeliveryFaults``), both validated from admin JSON with
messages that say what to send instead.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

__all__ = ["ConfigError", "DeliveryFaults", "DeliverySettings", "integer_option"]


class ConfigError(ValueError):
    """A bad admin request: the message says what to send instead (``status`` 400, 404 or 409)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def _number(body: Mapping[str, Any], name: str, default: float, *, low: float, high: float) -> float:
    value = body.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise ConfigError(f"'{name}' must be a number from {low:g} to {high:g}")
    return float(value)


def integer_option(body: Mapping[str, Any], name: str, default: int, *, low: int, high: int) -> int:
    value = body.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ConfigError(f"'{name}' must be an integer from {low} to {high}")
    return value


@dataclass(frozen=True)
class DeliverySettings:
    """The "Business events parameters" (ref §5.3): retry count 3, 1000 ms between retries, HTTP timeout
    10 s (ref §5.2), a few processing threads, Key Vault secret cache 5 minutes."""

    retry_count: int = 3
    retry_wait_ms: int = 1000
    timeout_ms: int = 10_000
    processing_threads: int = 4
    endpoints_per_event: int = 10
    key_vault_cache_seconds: int = 300

    def updated(self, body: Mapping[str, Any]) -> DeliverySettings:
        known = {f.name for f in fields(self)}
        unknown = sorted(set(body) - known)
        if unknown:
            raise ConfigError(f"unknown setting {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return DeliverySettings(
            retry_count=integer_option(body, "retry_count", self.retry_count, low=0, high=20),
            retry_wait_ms=integer_option(body, "retry_wait_ms", self.retry_wait_ms, low=0, high=600_000),
            timeout_ms=integer_option(body, "timeout_ms", self.timeout_ms, low=1, high=600_000),
            processing_threads=integer_option(
                body, "processing_threads", self.processing_threads, low=1, high=16
            ),
            endpoints_per_event=integer_option(
                body, "endpoints_per_event", self.endpoints_per_event, low=1, high=100
            ),
            key_vault_cache_seconds=integer_option(
                body, "key_vault_cache_seconds", self.key_vault_cache_seconds, low=0, high=86_400
            ),
        )

    def to_json(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True)
class DeliveryFaults:
    """Misbehaviour on purpose, so receivers prove they cope with at-least-once, unordered delivery
    (ref §5.3): ``duplicate_probability`` of an event being sent ``duplicate_count`` extra times;
    ``reorder_window`` events held per endpoint and released shuffled (or after ``reorder_max_hold_ms``);
    ``delay_ms`` before the first attempt."""

    duplicate_probability: float = 0.0
    duplicate_count: int = 1
    reorder_window: int = 0
    reorder_max_hold_ms: int = 2000
    delay_ms: int = 0

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> DeliveryFaults:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(body) - known)
        if unknown:
            raise ConfigError(f"unknown fault option {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        base = cls()
        return cls(
            duplicate_probability=_number(body, "duplicate_probability", 0.0, low=0, high=1),
            duplicate_count=integer_option(body, "duplicate_count", base.duplicate_count, low=1, high=10),
            reorder_window=integer_option(body, "reorder_window", 0, low=0, high=1000),
            reorder_max_hold_ms=integer_option(
                body, "reorder_max_hold_ms", base.reorder_max_hold_ms, low=0, high=600_000
            ),
            delay_ms=integer_option(body, "delay_ms", 0, low=0, high=600_000),
        )

    @property
    def active(self) -> bool:
        return self.duplicate_probability > 0 or self.reorder_window > 1 or self.delay_ms > 0

    def to_json(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}
