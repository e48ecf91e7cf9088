"""``python -m ops status``: pipeline counts, in-flight and stuck imports, recent failures with D365's
detail, recent business events (duplicate / out-of-order markers) and exports — the operations page's
content as a terminal report, or ``--json``.

It runs the same bounded pipeline as the page (``shared.pipelines.overview.gather_overview``), so the
``OVERVIEW_*`` settings bound it the same way. Exit 0; 1 when part of the overview could not be gathered
(each such problem is listed); 2 for invalid settings.
"""

from __future__ import annotations

import json
from typing import TextIO

from ops.common import load_settings
from shared.context import AppContext
from shared.pipelines.overview import EventRow, Failure, InflightJob, Overview, gather_overview

__all__ = ["format_overview", "status"]


def _line(text: str) -> str:
    """Free text (D365 messages carry line breaks) as one line."""
    return " ".join(text.split())


def _age(minutes: float) -> str:
    if minutes < 1:
        return "< 1 min"
    if minutes < 120:
        return f"{minutes:.0f} min"
    return f"{minutes / 60:.1f} h"


def _when(stamp: str) -> str:
    return stamp.replace("T", " ") if stamp else "-"


def _routes(overview: Overview) -> list[str]:
    if "imports" in overview.unknown:
        return [_UNKNOWN]
    if not overview.routes:
        return ["  (no import route configured and no file seen)"]
    width = max(12, *(len(r.route) for r in overview.routes))
    rows: list[tuple[object, ...]] = [("route", "waiting", "in flight", "stuck", "archived", "failed")]
    rows += [(r.route, r.waiting, r.in_flight, r.stuck, r.archived, r.failed) for r in overview.routes]
    totals = overview.totals()
    rows.append(("total", *(totals[k] for k in ("waiting", "in_flight", "stuck", "archived", "failed"))))
    return [
        f"  {name!s:<{width}}  {waiting!s:>7}  {flight!s:>9}  {stuck!s:>5}  {archived!s:>8}  {failed!s:>6}"
        for name, waiting, flight, stuck, archived, failed in rows
    ]


def _job(job: InflightJob) -> list[str]:
    flag = "STUCK " if job.stuck else ""
    live = job.d365_status or (f"could not ask ({job.d365_error})" if job.d365_error else "not asked")
    return [
        f"  {flag}{job.job_id}  route {job.route}  {job.file}  sent {_age(job.minutes)} ago",
        f"      D365 now: {live}; last recorded: {job.recorded_status} ({job.polls} polls)"
        + (f"; record {job.record_path}" if job.record_path else ""),
    ]


def _failure(failure: Failure) -> list[str]:
    lines = [
        f"  {_when(failure.at)}  {failure.kind} {failure.outcome}  {failure.subject}",
        f"      {_line(failure.message)}",
    ]
    facts = []
    if failure.d365_status:
        facts.append(f"D365 status {failure.d365_status}")
    if failure.error_count is not None:
        facts.append(f"{failure.error_count} error(s)")
    if failure.reason_code:
        facts.append(f"reason {failure.reason_code}")
    if facts:
        lines.append("      " + ", ".join(facts))
    lines += [f"      - {_line(message)}" for message in failure.errors]
    lines.append(f"      record: {failure.record_path}")
    return lines


def _event(event: EventRow) -> str:
    marks = [
        name
        for name, on in (("duplicate", event.duplicate), ("out of order", event.out_of_order),
                         ("poisoned", event.poisoned))
        if on
    ]  # fmt: skip
    if event.deliveries > 1:
        marks.append(f"redelivered ×{event.deliveries - 1}: {event.deliveries} deliveries")
    number = "-" if event.control_number is None else str(event.control_number)
    tags = "".join(f" [{m}]" for m in marks)
    return (
        f"  {_when(event.updated)}  {event.business_event_id} {event.legal_entity} #{number}  "
        f"{event.outcome} (attempts {event.attempts}){tags}  {event.event_id}"
    )


_UNKNOWN = "  unknown: could not be gathered (see Problems)"


def _section(title: str, rows: list[str], empty: str) -> list[str]:
    return ["", title, *(rows or [f"  {empty}"])]


def format_overview(overview: Overview) -> str:
    """The overview as a plain-text report."""
    window = f"{overview.window_hours:g} h"
    counts = overview.event_counts
    lines = [f"Operations overview at {_when(overview.generated_at)} (recent = last {window})"]
    lines += _section("Pipelines by route", _routes(overview), "")
    jobs = [line for job in overview.in_flight for line in _job(job)]
    if "imports" in overview.unknown:
        lines += _section("In-flight imports (unknown)", [_UNKNOWN], "")
    else:
        lines += _section(
            f"In-flight imports ({overview.in_flight_total}, {len(overview.stuck)} stuck)", jobs, "none"
        )
    failures = [line for f in overview.failures for line in _failure(f)]
    lines += _section(f"Recent failures ({len(overview.failures)})", failures, "none")
    title = (
        f"Business events: {counts.get('received', 0)} received in the window, "
        f"{counts.get('retrying', 0)} retrying, {counts.get('poisoned', 0)} poisoned"
    )
    if "business events" in overview.unknown:
        lines += _section("Business events: unknown", [_UNKNOWN], "")
    else:
        lines += _section(title, [_event(e) for e in overview.events], "none")
    exports = [f"  {_when(x.at)}  {x.kind} {x.name}  {x.outcome}  {x.subject}" for x in overview.exports]
    if "exports" in overview.unknown:
        lines += _section("Recent exports (unknown)", [_UNKNOWN], "")
    else:
        lines += _section(f"Recent exports ({len(overview.exports)})", exports, "none")
    if overview.notes:
        lines += _section("Notes", [f"  - {note}" for note in overview.notes], "")
    if overview.problems:
        lines += _section("Problems", [f"  - {problem}" for problem in overview.problems], "")
    return "\n".join(lines)


def status(
    settings_path: str | None,
    *,
    as_json: bool,
    ask_d365: bool = True,
    out: TextIO,
) -> int:
    """Print the overview; raises ConfigurationError/SettingsError for bad settings (the caller reports)."""
    context = AppContext.from_settings(load_settings(settings_path))
    try:
        overview = gather_overview(context, ask_d365=ask_d365)
    finally:
        context.close()
    if as_json:
        print(json.dumps(overview.to_dict(), indent=2), file=out)
    else:
        print(format_overview(overview), file=out)
    return 1 if overview.problems else 0
