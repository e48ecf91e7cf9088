"""What one export run did (a report the timer turns into a log line) and the budget that bounds it."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["ItemReport", "RunBudget", "RunReport"]


class RunBudget:
    """Time, size and message bounds shared by everything one timer invocation does.

    A run checks :meth:`exhausted` before taking new work (a dequeue, a poll), never in the middle of a
    message: a dequeued message that is not finished waits 30 minutes before D365 offers it again.
    """

    def __init__(
        self,
        *,
        max_seconds: float,
        max_bytes: int | None = None,
        max_messages: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_seconds = max_seconds
        self.max_bytes = max_bytes
        self.max_messages = max_messages
        self.clock = clock
        self.started = clock()
        self.bytes = 0
        self.messages = 0

    @classmethod
    def from_settings(cls, settings: Any, clock: Callable[[], float] = time.monotonic) -> RunBudget:
        """From ``ExportSettings`` (``run_max_seconds``, ``run_max_bytes``, ``run_max_messages``)."""
        return cls(
            max_seconds=settings.run_max_seconds,
            max_bytes=settings.run_max_bytes,
            max_messages=settings.run_max_messages,
            clock=clock,
        )

    def elapsed(self) -> float:
        return self.clock() - self.started

    def remaining(self) -> float:
        return max(0.0, self.max_seconds - self.elapsed())

    def charge(self, *, messages: int = 0, size: int = 0) -> None:
        self.messages += messages
        self.bytes += size

    def exhausted(self) -> str | None:
        """Why no new work may start (``time_budget``, ``size_budget``, ``message_budget``), or None."""
        if self.elapsed() >= self.max_seconds:
            return "time_budget"
        if self.max_bytes is not None and self.bytes >= self.max_bytes:
            return "size_budget"
        if self.max_messages is not None and self.messages >= self.max_messages:
            return "message_budget"
        return None


@dataclass
class ItemReport:
    """One message (dequeue) or execution (DMF export) handled in a run."""

    id: str  # correlation id or execution id
    action: str  # stored, already_stored, failed, waiting, finished, skipped ...
    path: str | None = None
    bytes: int = 0
    acked: bool | None = None
    outcome: str | None = None  # the status record's outcome, when one was written
    error: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        empty = {k for k, v in self.__dict__.items() if v is None or v == {} or (k == "bytes" and not v)}
        return {k: v for k, v in self.__dict__.items() if k not in empty}


@dataclass
class RunReport:
    """The outcome of one pipeline run for one activity or DMF job."""

    kind: str  # "dequeue" or "dmf_export"
    name: str  # the activity's or job's configured name
    stopped_by: str = ""  # queue_empty, time_budget, size_budget, message_budget, lease_held, error, done
    items: list[ItemReport] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0
    log_ids: dict[str, str] = field(default_factory=dict)  # the run's correlation ids, for log lines

    def add(self, item: ItemReport) -> ItemReport:
        self.items.append(item)
        return item

    def count(self, action: str) -> int:
        return sum(1 for item in self.items if item.action == action)

    @property
    def bytes(self) -> int:
        return sum(item.bytes for item in self.items)

    @property
    def ok(self) -> bool:
        """No error and every item ended well (a budget stop, a held lease or a wait is not an error)."""
        return not self.errors and not any(
            i.action == "failed" or i.acked is False or i.outcome in ("failed", "partially_succeeded")
            for i in self.items
        )

    def summary(self) -> str:
        """One readable line: what was done, how much, why the run stopped."""
        actions: dict[str, int] = {}
        for item in self.items:
            actions[item.action] = actions.get(item.action, 0) + 1
        done = ", ".join(f"{n} {a.replace('_', ' ')}" for a, n in sorted(actions.items())) or "nothing to do"
        unacked = sum(1 for i in self.items if i.acked is False)
        parts = [f"{self.kind} {self.name}: {done}"]
        if self.bytes:
            parts.append(f"{self.bytes / (1024 * 1024):,.1f} MiB")
        if unacked:
            parts.append(f"{unacked} not acked (D365 re-offers them; the next run acks without a copy)")
        parts.append(f"stopped: {self.stopped_by or 'done'}")
        parts.append(f"{self.seconds:.1f}s")
        if self.errors:
            parts.append("errors: " + "; ".join(self.errors))
        return "; ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "name": self.name,
            "ok": self.ok,
            "stopped_by": self.stopped_by,
            "seconds": round(self.seconds, 3),
            "bytes": self.bytes,
            "items": [item.to_dict() for item in self.items],
            "errors": list(self.errors),
        }
