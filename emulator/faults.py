"""Fault injection rules, changed at run time through the admin API: added latency, error statuses with
service-shaped bodies, and dropped connections (before any response, or in the middle of the body).

Pure model: ``decide`` picks what happens to one request; the D365 gate (emulator/middleware.py) acts on
the decision. The first matching rule that still has uses left applies; ``count`` makes a rule
deterministic ("the next 2 requests fail"), ``seed`` makes rates reproducible.
"""

from __future__ import annotations

import random
import threading
import uuid
from dataclasses import dataclass, field
from typing import Any, Literal

FAMILIES = ("all", "odata", "services", "connector", "metadata", "token", "keyvault", "other")
DROP_MODES = ("before_response", "mid_body")

Action = Literal["none", "error", "drop"]


@dataclass
class FaultRule:
    id: str
    family: str = "all"
    path_prefix: str | None = None
    method: str | None = None
    latency_ms: float = 0.0
    error_rate: float = 0.0
    error_status: int = 503
    retry_after: int | None = None  # seconds, sent with the injected error (typically 503)
    drop_rate: float = 0.0
    drop_mode: str = "before_response"
    count: int | None = None  # uses left; None = unlimited
    seed: int | None = None
    matched: int = 0
    _rng: random.Random = field(default_factory=random.Random, repr=False)

    def matches(self, family: str, method: str, path: str) -> bool:
        if self.count is not None and self.count <= 0:
            return False
        if self.family != "all" and self.family != family:
            return False
        if self.method is not None and self.method != method:
            return False
        return self.path_prefix is None or path.startswith(self.path_prefix)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "family": self.family,
            "path_prefix": self.path_prefix,
            "method": self.method,
            "latency_ms": self.latency_ms,
            "error_rate": self.error_rate,
            "error_status": self.error_status,
            "retry_after": self.retry_after,
            "drop_rate": self.drop_rate,
            "drop_mode": self.drop_mode,
            "count": self.count,
            "seed": self.seed,
            "matched": self.matched,
        }

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> FaultRule:
        """Validate an admin request body; raises ValueError with a readable message."""
        if not isinstance(body, dict):
            raise ValueError("a fault rule must be a JSON object")
        unknown = set(body) - {f for f in cls.__dataclass_fields__ if not f.startswith("_")} - {"matched"}
        if unknown:
            raise ValueError(f"unknown fault rule field(s): {', '.join(sorted(unknown))}")
        family = str(body.get("family", "all"))
        if family not in FAMILIES:
            raise ValueError(f"family must be one of {', '.join(FAMILIES)} (the admin API is never faulted)")
        drop_mode = str(body.get("drop_mode", "before_response"))
        if drop_mode not in DROP_MODES:
            raise ValueError(f"drop_mode must be one of {', '.join(DROP_MODES)}")
        error_status = int(body.get("error_status", 503))
        if not 400 <= error_status <= 599:
            raise ValueError("error_status must be an HTTP error status (typically 500, 502, 503 or 504)")
        rates = {name: float(body.get(name, 0.0)) for name in ("error_rate", "drop_rate")}
        for name, rate in rates.items():
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1")
        latency = float(body.get("latency_ms", 0.0))
        if latency < 0:
            raise ValueError("latency_ms must not be negative")
        count = body.get("count")
        if count is not None and int(count) < 0:
            raise ValueError("count must not be negative")
        seed = body.get("seed")
        method = body.get("method")
        retry_after = body.get("retry_after")
        rule = cls(
            id=str(body.get("id") or uuid.uuid4().hex[:8]),
            family=family,
            path_prefix=str(body["path_prefix"]) if body.get("path_prefix") else None,
            method=str(method).upper() if method else None,
            latency_ms=latency,
            error_rate=rates["error_rate"],
            error_status=error_status,
            retry_after=int(retry_after) if retry_after is not None else None,
            drop_rate=rates["drop_rate"],
            drop_mode=drop_mode,
            count=int(count) if count is not None else None,
            seed=int(seed) if seed is not None else None,
        )
        rule._rng = random.Random(rule.seed)
        return rule


@dataclass(frozen=True)
class FaultDecision:
    rule_id: str
    latency_seconds: float
    action: Action
    status: int = 0
    retry_after: int | None = None
    drop_mode: str = "before_response"


class FaultInjector:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rules: list[FaultRule] = []
        self.injected: dict[str, int] = {}  # counters: latency / error / drop

    @property
    def active(self) -> bool:
        return bool(self._rules)

    def rules(self) -> list[FaultRule]:
        return list(self._rules)

    def add(self, body: dict[str, Any]) -> FaultRule:
        rule = FaultRule.from_json(body)
        with self._lock:
            self._rules = [r for r in self._rules if r.id != rule.id] + [rule]
        return rule

    def replace(self, bodies: list[dict[str, Any]]) -> list[FaultRule]:
        rules = [FaultRule.from_json(b) for b in bodies]
        with self._lock:
            self._rules = rules
        return rules

    def remove(self, rule_id: str) -> bool:
        with self._lock:
            before = len(self._rules)
            self._rules = [r for r in self._rules if r.id != rule_id]
            return len(self._rules) != before

    def clear(self) -> None:
        with self._lock:
            self._rules = []
            self.injected = {}

    def decide(self, family: str, method: str, path: str) -> FaultDecision | None:
        """What the first applicable rule does to this request (None: no rule matches)."""
        if not self._rules or family == "admin":
            return None
        with self._lock:
            for rule in self._rules:
                if not rule.matches(family, method, path):
                    continue
                rule.matched += 1
                if rule.count is not None:
                    rule.count -= 1
                action: Action = "none"
                if rule.error_rate > 0 and (rule.error_rate >= 1.0 or rule._rng.random() < rule.error_rate):
                    action = "error"
                elif rule.drop_rate > 0 and (rule.drop_rate >= 1.0 or rule._rng.random() < rule.drop_rate):
                    action = "drop"
                latency = rule.latency_ms / 1000.0
                if latency:
                    self.injected["latency"] = self.injected.get("latency", 0) + 1
                if action != "none":
                    self.injected[action] = self.injected.get(action, 0) + 1
                if action == "none" and not latency:
                    return None
                return FaultDecision(
                    rule_id=rule.id,
                    latency_seconds=latency,
                    action=action,
                    status=rule.error_status,
                    retry_after=rule.retry_after,
                    drop_mode=rule.drop_mode,
                )
        return None
