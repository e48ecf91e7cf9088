"""What a started runner serves, for the caller to print (``describe()``) or read (``as_dict()``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from runner.discovery import Skipped
from runner.keys import HostKeys
from runner.plan import Plan

__all__ = ["BlobInfo", "HttpInfo", "StartedInfo", "TimerInfo", "started_info"]


@dataclass(frozen=True)
class HttpInfo:
    function: str
    methods: tuple[str, ...]  # empty = every method
    route: str
    url: str
    auth_level: str


@dataclass(frozen=True)
class TimerInfo:
    function: str
    schedule: str
    next_run: datetime
    run_on_startup: bool


@dataclass(frozen=True)
class BlobInfo:
    function: str
    path: str
    connection: str
    source: str


@dataclass(frozen=True)
class StartedInfo:
    base_url: str
    host_id: str
    instance_id: str
    master_key: str
    host_keys: Mapping[str, str]
    function_keys: Mapping[str, Mapping[str, str]]
    http: tuple[HttpInfo, ...]
    timers: tuple[TimerInfo, ...]
    blobs: tuple[BlobInfo, ...]
    skipped: tuple[Skipped, ...]
    watched_containers: tuple[str, ...]

    def key_for(self, function: str) -> str:
        """The function's ``default`` key (what a caller needs for an auth level ``function`` route)."""
        keys = self.function_keys.get(function.lower(), {})
        return keys.get("default") or next(iter(keys.values()), "") or self.host_keys.get("default", "")

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["timers"] = [{**t, "next_run": t["next_run"].isoformat()} for t in data["timers"]]
        return data

    def describe(self) -> str:
        """A readable listing like ``func start`` prints: functions, URLs, schedules, keys, skips."""
        lines = [f"Functions (host id {self.host_id!r}, instance {self.instance_id!r}):", ""]
        for h in self.http:
            methods = ",".join(h.methods) if h.methods else "ALL"
            lines.append(f"  {h.function}: [{methods}] {h.url}  (auth: {h.auth_level})")
        for t in self.timers:
            startup = ", run on startup" if t.run_on_startup else ""
            lines.append(
                f"  {t.function}: timerTrigger '{t.schedule}' (next {t.next_run.isoformat()}{startup})"
            )
        for b in self.blobs:
            lines.append(
                f"  {b.function}: blobTrigger {b.path} (connection {b.connection}, "
                f"source {b.source}, polled locally)"
            )
        if not (self.http or self.timers or self.blobs):
            lines.append("  (no functions the runner can serve)")
        lines += ["", f"Keys (x-functions-key header or ?code=): master {self.master_key}"]
        lines += [f"  host key {name}: {value}" for name, value in self.host_keys.items()]
        for h in self.http:
            if h.auth_level == "function":
                lines.append(f"  {h.function}: {self.key_for(h.function)}")
        for s in self.skipped:
            lines.append(f"Skipped {s.name}: {s.reason}")
        return "\n".join(lines)


def started_info(
    plan: Plan, keys: HostKeys, *, base_url: str, prefix: str, host_id: str, instance_id: str
) -> StartedInfo:
    """What a runner serving ``plan`` at ``base_url`` offers, for printing."""
    root = f"{base_url}/{prefix}" if prefix else base_url
    http = tuple(
        HttpInfo(
            spec.name,
            tuple(sorted(route.methods)),
            route.template,
            f"{root}/{route.template}" if route.template else root,
            str(spec.trigger.get("authLevel") or "function").lower(),
        )
        for spec, route in plan.http
    )
    now = datetime.now(UTC)
    timers = tuple(
        TimerInfo(
            t.spec.name,
            t.schedule.describe(),
            t.schedule.next_after(now),
            bool(t.spec.trigger.get("runOnStartup")),
        )
        for t in plan.timers
    )
    blobs = tuple(BlobInfo(b.spec.name, str(b.path), b.connection, b.source) for b in plan.blobs)
    return StartedInfo(
        base_url=base_url,
        host_id=host_id,
        instance_id=instance_id,
        master_key=keys.master,
        host_keys=dict(keys.host_keys),
        function_keys={k: dict(v) for k, v in keys.function_keys.items()},
        http=http,
        timers=timers,
        blobs=blobs,
        skipped=plan.skipped,
        watched_containers=tuple(sorted({b.path.container for b in plan.blobs})),
    )
