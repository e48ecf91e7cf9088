"""``python -m ops export-now``: run an export timer's pipeline now and say what was written where.

- ``--activity NAME`` / ``--all-activities``: ``dequeue_exports`` for one ``EXPORT_ACTIVITIES`` entry, or
  ``dequeue_all_exports``: drain the recurring export queue into the exports container (each package
  stored exactly once, acked after it is stored — the same run as the timer's, under the same lease).
- ``--dmf NAME``: ``run_dmf_export`` for one ``DMF_EXPORTS`` entry (its name or its definition group). A
  manual run is keyed by the current 5-minute slot instead of the job's period: the execution id is
  ``{job}-{yyyymmddThhmmZ}`` of that slot, so a second run within it re-attaches to the same D365 export
  (never a second one), a later run starts a fresh export. It polls D365 up to ``--timeout`` seconds; an
  export still running then is finished by the next run (this command again, or the DMF timer, which
  picks up every unfinished execution of the job).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import TextIO

from ops.common import load_settings, open_context
from ops.importing import OpsError
from ops.progress import format_bytes
from shared.context import AppContext
from shared.pipelines.exports import (
    DmfExportJob,
    ExportSettings,
    RunBudget,
    RunReport,
    dequeue_all_exports,
    dequeue_exports,
    run_dmf_export,
)

__all__ = ["MANUAL_SLOT_MINUTES", "ExportRequest", "export_now"]

MANUAL_SLOT_MINUTES = 5  # the shortest period DMF_EXPORTS allows


@dataclass(frozen=True)
class ExportRequest:
    activity: str | None = None
    all_activities: bool = False
    dmf: str | None = None
    timeout: float = 300.0
    as_json: bool = False


def _dmf_job(settings: ExportSettings, name: str) -> DmfExportJob:
    for job in settings.dmf_jobs:
        if name in (job.name, job.definition_group):
            return job
    known = ", ".join(j.name for j in settings.dmf_jobs) or "none configured"
    raise OpsError(
        f"no DMF export named {name!r} (or with that definition group) in DMF_EXPORTS (jobs: {known})"
    )


def _reports(context: AppContext, settings: ExportSettings, request: ExportRequest) -> list[RunReport]:
    budget = RunBudget(
        max_seconds=request.timeout, max_bytes=settings.run_max_bytes, max_messages=settings.run_max_messages
    )
    if request.dmf is not None:
        job = replace(_dmf_job(settings, request.dmf), period_minutes=MANUAL_SLOT_MINUTES, offset_minutes=0)
        return [run_dmf_export(context, job, now=datetime.now(UTC), budget=budget)]
    if request.activity is not None:
        try:
            activity = settings.activity(request.activity)
        except KeyError:
            known = ", ".join(a.name for a in settings.activities) or "none configured"
            raise OpsError(
                f"no export activity named {request.activity!r} in EXPORT_ACTIVITIES (activities: {known})"
            ) from None
        return [dequeue_exports(context, activity, budget=budget)]
    if not settings.activities:
        raise OpsError("no export activities configured (EXPORT_ACTIVITIES)")
    return dequeue_all_exports(context, budget=budget)


def _finished(report: RunReport) -> bool:
    """Every item ended (a DMF export still running in D365 is ``waiting``)."""
    return report.ok and not any(item.action == "waiting" for item in report.items)


def _write_lines(out: TextIO, reports: list[RunReport]) -> None:
    for report in reports:
        out.write(report.summary() + "\n")
        for item in report.items:
            where = f" -> {item.path}" if item.path else ""
            size = f" ({format_bytes(item.bytes)})" if item.bytes else ""
            state = f" [{item.outcome}]" if item.outcome else ""
            out.write(f"  {item.action.replace('_', ' ')} {item.id}{where}{size}{state}\n")
            for key in ("unpacked_to", "manifest", "status_record"):
                if item.details.get(key):
                    out.write(f"    {key.replace('_', ' ')}: {item.details[key]}\n")
            if item.action == "waiting":
                out.write("    still running in D365: run this again (or let the DMF timer) to finish it\n")
            if item.error:
                out.write(f"    error: {item.error}\n")


def export_now(settings_path: str | None, request: ExportRequest, out: TextIO) -> int:
    """Run the selected export(s); exit 0 when every one finished well, 1 otherwise."""
    context = open_context(load_settings(settings_path, [ExportSettings]))
    try:
        settings = context.settings.section(ExportSettings)
        reports = _reports(context, settings, request)
    finally:
        context.close()
    if request.as_json:
        out.write(json.dumps([r.to_dict() for r in reports], indent=2) + "\n")
    else:
        _write_lines(out, reports)
    out.flush()
    return 0 if all(_finished(r) for r in reports) else 1
