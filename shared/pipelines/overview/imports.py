"""The import side of the overview: files per route (waiting, in flight, archived, failed), in-flight jobs
with their D365 status, stuck jobs, and recent failures with D365's error detail.

Where each fact comes from (``shared.pipelines.imports.layout``): waiting = blobs in inbound (route by the
longest prefix); in flight = ``state/jobs/{job}.json`` (route from the job id, ``layout.job_route``, so
counting costs no read); archived / failed = ``.status.json`` records in ``archive/`` / ``errors/`` under
``{route}/{yyyy}/{mm}/{dd}/`` folders of the window's days, modified within the window.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from shared.pipelines.imports import layout
from shared.pipelines.imports.settings import ImportSettings, Route
from shared.pipelines.overview.d365_status import LiveStatus
from shared.pipelines.overview.listing import Listed, Lister
from shared.pipelines.overview.model import Failure, InflightJob, Overview, RouteCounts, as_dict, as_list
from shared.status import STATUS_SUFFIX, Outcome, status_name

__all__ = ["day_prefixes", "gather_imports", "job_route", "route_for"]

UNROUTED = "_unrouted"
_ERRORS_SHOWN = 3


def day_prefixes(since: datetime, now: datetime) -> list[str]:
    """``yyyy/mm/dd/`` of every UTC day from ``since`` to ``now``."""
    day, last = since.date(), now.date()
    days: list[str] = []
    while day <= last:
        days.append(f"{day:%Y/%m/%d}/")
        day += timedelta(days=1)
    return days


def route_for(blob_name: str, routes: Iterable[Route]) -> str:
    """The route serving an inbound blob: the longest matching prefix (as intake decides)."""
    matching = [r for r in routes if blob_name.startswith(r.prefix)]
    return max(matching, key=lambda r: len(r.prefix)).name if matching else UNROUTED


def job_route(job_id: str, routes: Iterable[Route] = ()) -> str:
    return layout.job_route(job_id, {r.name for r in routes}) or UNROUTED


def _minutes(now: datetime, stamp: str) -> float:
    try:
        moment = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return 0.0
    return max(0.0, (now - moment).total_seconds() / 60)


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def _recorded(lister: Lister, container: str, since: datetime, days: list[str]) -> dict[str, list[Listed]]:
    """Status records per route folder written within the window (not D365's error files)."""
    found: dict[str, list[Listed]] = {}
    for folder in lister.folders(container):
        route = folder.rstrip("/")
        for day in days:
            for blob in lister.blobs(container, f"{folder}{day}"):
                if (
                    blob.name.endswith(STATUS_SUFFIX)
                    and "/d365/" not in blob.name
                    and blob.last_modified >= since
                ):
                    found.setdefault(route, []).append(blob)
    return found


def failure_from_record(record: dict[str, Any], path: str, *, route: str | None = None) -> Failure:
    """A failure row from an import or export status record (``shared.status`` shape)."""
    d365, details = as_dict(record.get("d365")), as_dict(record.get("details"))
    errors = as_list(d365.get("errors"))
    messages = [_text(e.get("message") if isinstance(e, dict) else e) for e in errors[:_ERRORS_SHOWN]]
    count = d365.get("error_count")
    files = as_list(d365.get("error_files"))
    return Failure(
        kind=_text(record.get("kind")) or "import",
        subject=_text(record.get("subject")),
        outcome=_text(record.get("outcome")),
        message=_text(record.get("message")),
        at=_text(record.get("updated")),
        record_path=path,
        route=route,
        d365_status=_text(d365.get("status")) or None,
        error_count=count if isinstance(count, int) else None,
        errors=[m for m in messages if m],
        error_files=[_text(f) for f in files[:10]],
        summary_page_url=_text(d365.get("summary_page_url")) or None,
        reason_code=_text(details.get("reason_code")) or None,
        resubmitted=as_dict(details.get("resubmitted")) or None,
    )


def _inflight_job(job: dict[str, Any], now: datetime, settings: ImportSettings) -> InflightJob:
    status = as_dict(job.get("status"))
    minutes = _minutes(now, _text(job.get("sent_at")))
    outcome = _text(status.get("outcome")) or str(Outcome.SENT)
    source = as_dict(job.get("input"))
    record = None
    if source.get("container") and source.get("name"):
        record = f"{source['container']}/{status_name(str(source['name']))}"
    return InflightJob(
        job_id=_text(job.get("job_id")),
        route=_text(job.get("route")) or job_route(_text(job.get("job_id"))),
        file=_text(job.get("file_name")),
        target=_text(job.get("target")),
        sent_at=_text(job.get("sent_at")),
        minutes=round(minutes, 1),
        polls=int(job.get("polls") or 0),
        outcome=outcome,
        stuck=outcome == Outcome.STUCK or minutes > settings.stuck_after_minutes,
        recorded_status=_text(job.get("last_status")) or "not polled yet",
        execution_id=_text(job.get("execution_id")) or None,
        message_id=_text(job.get("message_id")) or None,
        record_path=record,
    )


def gather_imports(
    overview: Overview,
    lister: Lister,
    settings: ImportSettings,
    *,
    now: datetime,
    since: datetime,
    recent: int,
    inflight_limit: int,
    live: LiveStatus | None,
) -> None:
    """Fill ``overview.routes``, ``in_flight`` and import ``failures``."""
    counts = {r.name: RouteCounts(r.name) for r in settings.routes}

    def route(name: str) -> RouteCounts:
        return counts.setdefault(name, RouteCounts(name))

    for blob in lister.blobs(settings.inbound_container):
        route(route_for(blob.name, settings.routes)).waiting += 1

    job_blobs = [
        b for b in lister.blobs(settings.state_container, layout.JOBS_PREFIX) if b.name.endswith(".json")
    ]
    overview.in_flight_total = len(job_blobs)
    for blob in job_blobs:
        route(job_route(blob.name[len(layout.JOBS_PREFIX) : -len(".json")], settings.routes)).in_flight += 1
    for blob in sorted(job_blobs, key=lambda b: b.last_modified)[:inflight_limit]:
        job = lister.read_json(blob.container, blob.name)
        if job is None or not job.get("job_id"):
            continue
        row = _inflight_job(job, now, settings)
        if live is not None:
            row.d365_status, row.d365_error = live.ask(job)
        overview.in_flight.append(row)
        if row.stuck:
            route(row.route).stuck += 1
    overview.in_flight.sort(key=lambda j: (not j.stuck, -j.minutes))
    if len(job_blobs) > inflight_limit:
        overview.notes.append(
            f"{len(job_blobs)} imports in flight; the oldest {inflight_limit} are shown "
            "(OVERVIEW_INFLIGHT_LIMIT)"
        )

    days = day_prefixes(since, now)
    for name, blobs in _recorded(lister, settings.archive_container, since, days).items():
        route(name).archived += len(blobs)
    failed = _recorded(lister, settings.errors_container, since, days)
    for name, blobs in failed.items():
        route(name).failed += len(blobs)
    newest = sorted(
        (b for blobs in failed.values() for b in blobs), key=lambda b: b.last_modified, reverse=True
    )
    for blob in newest[:recent]:
        record = lister.read_json(blob.container, blob.name)
        if record is not None:
            overview.failures.append(failure_from_record(record, blob.path, route=blob.name.split("/", 1)[0]))
    overview.routes = sorted(counts.values(), key=lambda c: (c.route == UNROUTED, c.route))
