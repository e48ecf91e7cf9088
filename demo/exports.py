"""Export flows: D365 (the emulator) builds a package for the recurring export job and queues it, the app's
dequeue timer stores it and acknowledges it; the app's DMF export timer runs ``ExportToPackage`` for the
configured data project and streams the package into blob storage. Timers are run now through the runner's
host endpoint.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from demo.report import FlowResult
from demo.target import FlowFailed, Stack, eventually
from shared.pipelines.exports.layout import (
    dmf_execution_id,
    dmf_period_start,
    dmf_state_name,
    export_state_name,
    safe_correlation_id,
)
from shared.pipelines.exports.settings import ExportSettings
from shared.status import STATUS_SUFFIX, Outcome, status_name

__all__ = ["dequeue_flow", "dmf_export_flow"]


def dequeue_flow(stack: Stack, *, timeout: float) -> FlowResult:
    """Queue an export package in the first EXPORT_ACTIVITIES job; wait until the app stored and acked it."""
    settings = stack.settings.section(ExportSettings)
    if not settings.activities:
        raise FlowFailed("EXPORT_ACTIVITIES is empty: there is no recurring export job to dequeue")
    activity = settings.activities[0]
    message = stack.admin("POST", f"connector/activities/{activity.key}/export")
    correlation = safe_correlation_id(str(message["message_id"]))
    state_name = export_state_name(activity.key, correlation)

    def stored() -> tuple[dict[str, Any], dict[str, Any]] | None:
        stack.nudge("exports_dequeue", 5)
        state = stack.read_json(settings.state_container, state_name)
        if not state or not state.get("path"):
            return None
        record = stack.read_json(settings.container, status_name(str(state["path"])))
        if record is None or not Outcome(record["outcome"]).final:
            return None
        return state, record

    state, record = eventually(stack, stored, timeout=timeout, what=f"export package {correlation} stored")
    path = f"{settings.container}/{state['path']}"
    details = record.get("details", {})
    acked = bool(state.get("acked_at"))
    problems = [] if record["outcome"] == Outcome.SUCCEEDED else [str(record.get("message", ""))]
    if activity.unpack and not details.get("unpacked_to"):  # the activity's own options (EXPORT_ACTIVITIES)
        problems.append("not unpacked beside the package")
    manifest = str(details.get("manifest") or "")
    if activity.manifest and not (manifest and stack.exists(*manifest.split("/", 1))):
        problems.append("its manifest record is not stored")
    ok = acked and not problems
    headline = (
        f"recurring export job {activity.name!r} ({activity.key}): package {correlation} "
        f"({message.get('size', 0):,} bytes) dequeued, stored"
        f"{' and acknowledged' if acked else ', NOT acknowledged'}"
    )
    if details.get("files"):
        headline += f", {details['files']} file(s) unpacked"
    if problems:
        headline += f": {'; '.join(problems)}"
    where = [f"{path}  (+ {STATUS_SUFFIX})"]
    if details.get("unpacked_to"):
        where.append(f"{details['unpacked_to']}  (unpacked files)")
    if details.get("manifest"):
        where.append(f"{details['manifest']}  (manifest record)")
    return FlowResult("export dequeue", ok, headline, where)


def dmf_export_flow(stack: Stack, *, timeout: float) -> FlowResult:
    """Run the first DMF_EXPORTS job for the current period; wait until its package is stored.

    One export per period is the app's rule: when this period's export already ran (``make run`` keeps its
    state), the flow shows that one instead of starting another."""
    settings = stack.settings.section(ExportSettings)
    if not settings.dmf_jobs:
        raise FlowFailed("DMF_EXPORTS is empty: there is no DMF export to run")
    job = settings.dmf_jobs[0]
    period = dmf_period_start(datetime.now(UTC), job.period_minutes, job.offset_minutes)
    execution = dmf_execution_id(job.name, period)
    state_name = dmf_state_name(job.name, execution)
    before = stack.read_json(settings.state_container, state_name)
    earlier = before is not None and before.get("phase") == "finished"

    def finished() -> dict[str, Any] | None:
        if not earlier:
            stack.nudge("dmf_exports", 30)
        state = stack.read_json(settings.state_container, state_name)
        return state if state and state.get("phase") == "finished" else None

    state = eventually(stack, finished, timeout=timeout, what=f"DMF export {execution} finished")
    path = f"{settings.container}/{state['path']}"
    record = stack.read_json(settings.container, status_name(str(state["path"]))) or {}
    succeeded = state.get("outcome") == Outcome.SUCCEEDED
    ok = succeeded and bool(record) and stack.exists(settings.container, str(state["path"]))
    status = record.get("d365", {}).get("status", "?")
    headline = (
        f"DMF export {job.name!r}: ExportToPackage of {job.definition_group!r} "
        f"({job.legal_entity or 'default company'}), execution {execution} -> D365 {status} -> "
    )
    if ok:
        headline += f"package stored ({int(state.get('bytes') or 0):,} bytes)"
    elif succeeded:
        headline += f"succeeded, but {path} or its status record is missing"
    else:
        headline += f"{state.get('outcome')}: {state.get('message', '')}"
    if earlier:
        headline += f"; this period's export had already run (one per {job.period_minutes} minutes)"
    where = [f"{path}  (+ {STATUS_SUFFIX})" if ok else f"{path}{STATUS_SUFFIX}  (status record, no package)"]
    return FlowResult("DMF export", ok, headline, where)
