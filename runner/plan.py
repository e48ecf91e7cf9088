"""Turn discovered functions plus settings into what the runner will serve, skipping (with a reason) the rest.

This is where ``%SETTING%`` expressions in schedules and blob paths are resolved, schedules and routes
parsed, blob connections resolved, and ``AzureWebJobs.<name>.Disabled`` honoured — so a function whose
configuration is wrong is reported at start with the exact problem, as the host reports a function
"in error", while the other functions still run.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import tzinfo

from azure.storage.blob import BlobServiceClient

from runner.blobs import BlobPath, BlobPathError, parse_blob_path
from runner.discovery import Discovery, FunctionSpec, Skipped
from runner.ncrontab import Schedule, ScheduleError, parse_schedule
from runner.routes import Route, RouteError, parse_route
from runner.settings import SettingsError, is_disabled, resolve_expression
from runner.storage import DEFAULT_CONNECTION, service_for_connection

__all__ = ["BlobPlan", "Plan", "TimerPlan", "make_plan"]

log = logging.getLogger("runner")
RESERVED_ROUTE_STARTS = ("admin", "runtime")


@dataclass(frozen=True)
class TimerPlan:
    spec: FunctionSpec
    schedule: Schedule


@dataclass(frozen=True)
class BlobPlan:
    spec: FunctionSpec
    path: BlobPath
    service: BlobServiceClient
    connection: str
    source: str


@dataclass(frozen=True)
class Plan:
    http: tuple[tuple[FunctionSpec, Route], ...]
    timers: tuple[TimerPlan, ...]
    blobs: tuple[BlobPlan, ...]
    skipped: tuple[Skipped, ...]

    @property
    def functions(self) -> dict[str, FunctionSpec]:
        specs = [s for s, _ in self.http] + [t.spec for t in self.timers] + [b.spec for b in self.blobs]
        return {spec.name: spec for spec in specs}


def _http(spec: FunctionSpec) -> Route:
    template = str(spec.trigger.get("route") or spec.name)
    if template.strip("/").lower().split("/")[0] in RESERVED_ROUTE_STARTS:
        raise RouteError(f"route {template!r} starts with a segment the host reserves (admin, runtime)")
    methods = [str(m) for m in spec.trigger.get("methods") or []]
    return parse_route(template, methods=methods, target=spec.name)


def _timer(spec: FunctionSpec, settings: Mapping[str, str], zone: tzinfo) -> TimerPlan:
    text = resolve_expression(str(spec.trigger.get("schedule", "")), settings, what="schedule")
    return TimerPlan(spec, parse_schedule(text, zone=zone))


def _blob(spec: FunctionSpec, settings: Mapping[str, str]) -> BlobPlan:
    path = parse_blob_path(resolve_expression(str(spec.trigger.get("path", "")), settings, what="path"))
    connection = str(spec.trigger.get("connection") or DEFAULT_CONNECTION)
    source = str(spec.trigger.get("source") or "LogsAndContainerScan")
    if source == "EventGrid":
        log.info(
            "%s: source=EventGrid is served by polling %s locally (Event Grid cannot deliver to this "
            "machine)",
            spec.name,
            path.container,
        )
    return BlobPlan(spec, path, service_for_connection(connection, settings), connection, source)


def make_plan(discovery: Discovery, settings: Mapping[str, str], *, zone: tzinfo) -> Plan:
    http: list[tuple[FunctionSpec, Route]] = []
    timers: list[TimerPlan] = []
    blobs: list[BlobPlan] = []
    skipped = list(discovery.skipped)
    for spec in discovery.functions:
        if is_disabled(spec.name, settings):
            skipped.append(Skipped(spec.name, f"disabled by the setting AzureWebJobs.{spec.name}.Disabled"))
            continue
        try:
            if spec.kind == "http":
                http.append((spec, _http(spec)))
            elif spec.kind == "timer":
                timers.append(_timer(spec, settings, zone))
            else:
                blobs.append(_blob(spec, settings))
        except (SettingsError, ScheduleError, RouteError, BlobPathError) as exc:
            skipped.append(Skipped(spec.name, f"in error: {exc}"))
            continue
        if spec.retry_policy and spec.kind != "timer":
            log.warning(
                "%s: @app.retry is ignored for %s triggers (the host applies retry policies only "
                "to timer, Event Hubs, Kafka and Cosmos DB triggers)",
                spec.name,
                spec.kind,
            )
    return Plan(tuple(http), tuple(timers), tuple(blobs), tuple(skipped))
