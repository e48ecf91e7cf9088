"""Export timers: the recurring-integrations dequeue and the DMF package exports, on app-setting schedules.

Schedules are ``%SETTING%`` binding expressions, resolved by the Functions host (and the local runner):

- ``EXPORT_DEQUEUE_SCHEDULE`` (e.g. ``0 */5 * * * *``): drain every activity in ``EXPORT_ACTIVITIES``.
- ``DMF_EXPORT_SCHEDULE`` (e.g. ``0 */15 * * * *``): start / re-attach to / finish every job in
  ``DMF_EXPORTS``. A job exports once per its ``period_minutes``; ticking more often only checks on it.

One function serves all activities because v2 decorators are static. An activity that needs its own cadence
gets its own function here, a copy of ``exports_dequeue`` with ``schedule="%EXPORT_DEQUEUE_SCHEDULE_<X>%"``
calling ``dequeue_exports(context, settings.activity("<x>"))`` — and ``EXPORT_ACTIVITIES`` then lists it
for that function only (two functions draining one activity is safe, the per-activity lease serialises
them, but pointless). Runs never overlap themselves: the host's timer is a singleton, and the pipelines
also take a blob lease per activity / job because scale-out must not depend on that.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import azure.functions as func

from shared.context import get_context
from shared.logs import log_context
from shared.pipelines.exports import RunReport, dequeue_all_exports, run_all_dmf_exports

bp = func.Blueprint()  # type: ignore[no-untyped-call]  # azure-functions leaves __init__ untyped
log = logging.getLogger(__name__)


def _log_reports(what: str, timer: func.TimerRequest, reports: list[RunReport]) -> None:
    """One line per activity / job, and a total: INFO when all went well, ERROR when anything failed."""
    late = " (past due)" if timer.past_due else ""
    if not reports:
        log.warning("%s%s: nothing configured", what, late)
        return
    for report in reports:
        with log_context(**report.log_ids):  # activity / dmf_job and execution ids, as the pipeline's lines
            log.log(logging.INFO if report.ok else logging.ERROR, "%s%s: %s", what, late, report.summary())
    failed = [r.name for r in reports if not r.ok]
    total = sum(r.bytes for r in reports) / (1024 * 1024)
    log.log(
        logging.ERROR if failed else logging.INFO,
        "%s%s finished: %d configured, %.1f MiB stored, %s",
        what,
        late,
        len(reports),
        total,
        f"problems in {', '.join(failed)}" if failed else "all ok",
    )


@bp.function_name("exports_dequeue")
@bp.timer_trigger(
    arg_name="timer", schedule="%EXPORT_DEQUEUE_SCHEDULE%", run_on_startup=False, use_monitor=True
)
def exports_dequeue(timer: func.TimerRequest) -> None:
    """Dequeue every configured recurring export activity into the exports container."""
    _log_reports("export dequeue", timer, dequeue_all_exports(get_context()))


@bp.function_name("dmf_exports")
@bp.timer_trigger(arg_name="timer", schedule="%DMF_EXPORT_SCHEDULE%", run_on_startup=False, use_monitor=True)
def dmf_exports(timer: func.TimerRequest) -> None:
    """Run every configured DMF package export for the current period."""
    _log_reports("DMF export", timer, run_all_dmf_exports(get_context(), now=datetime.now(UTC)))
