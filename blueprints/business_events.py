"""Business events: HTTP receipt from D365 / Event Grid, processing of each stored event, retries, replay.

- ``POST /api/business-events`` (function key): validate and store durably, answer at once.
- blob trigger on the raw-event container (``BUSINESS_EVENTS_CONTAINER``, read when the app loads; source
  ``BUSINESS_EVENTS_BLOB_SOURCE``): run the event's handlers, once.
- timer (every 30 s): attempts that are due after a failure, then the sweep: stored events whose trigger
  never ran (no processing record ``BUSINESS_EVENTS_SWEEP_MIN_AGE_SECONDS`` after receipt).
- ``POST /api/business-events/replay[/{event_id}]`` (admin key; ``?force=true``, ``?limit=``, ``?after=``
  the previous answer's ``continue_after``): operators process poisoned events again.
"""

from __future__ import annotations

import json
import logging

import azure.functions as func

from shared.context import get_context
from shared.events.settings import blob_source_name, raw_container_name
from shared.logs import log_context
from shared.pipelines.business_events import (
    process_stored_event,
    receive_events,
    replay_poisoned,
    retry_and_sweep,
)
from shared.settings import ConfigurationError

bp = func.Blueprint()  # type: ignore[no-untyped-call]  # azure-functions leaves __init__ untyped
log = logging.getLogger(__name__)

_MISCONFIGURED = {"status": "error", "error": "unavailable", "message": "the receiver is not available"}


def _json(body: object, status: int) -> func.HttpResponse:
    return func.HttpResponse(json.dumps(body), status_code=status, mimetype="application/json")


@bp.function_name("business_events_receive")
@bp.route(route="business-events", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
def business_events_receive(req: func.HttpRequest) -> func.HttpResponse:
    """One D365 business event (or a batch, or an Event Grid delivery): stored, then answered."""
    try:
        context = get_context()
        result = receive_events(context, req.get_body(), dict(req.headers))
    except ConfigurationError as exc:  # the caller learns nothing about our configuration
        log.error("business events receiver misconfigured: %s", exc)
        return _json(_MISCONFIGURED, 503)
    return _json(result.body, result.status)


@bp.function_name("business_events_process")
@bp.blob_trigger(
    arg_name="stored",
    path=f"{raw_container_name()}/{{name}}",
    connection="AzureWebJobsStorage",
    source=func.BlobSource(blob_source_name()),
)
def business_events_process(stored: func.InputStream) -> None:
    """Run the handlers of one stored event; handler failures are retried by the timer, not the host."""
    result = process_stored_event(get_context(), stored.name or "")
    with log_context(event_id=result.event_id, blob=result.blob):
        log.info("business event %s: %s %s", result.event_id, result.outcome, result.message)


@bp.function_name("business_events_retry")
@bp.timer_trigger(arg_name="timer", schedule="*/30 * * * * *", run_on_startup=False)
def business_events_retry(timer: func.TimerRequest) -> None:
    """Attempts that are due after a failed one (backoff per BUSINESS_EVENTS_RETRY_BACKOFF_SECONDS), then
    the events the blob trigger missed (each one logged as EVENT_SWEPT)."""
    report = retry_and_sweep(get_context())
    if report.retried:
        retried = ", ".join(f"{r.event_id}={r.outcome}" for r in report.retried)
        log.info("business event retries: %s", retried)
    if report.swept.more:
        log.warning("business events sweep: more missed events than BUSINESS_EVENTS_SWEEP_BATCH; continuing")


@bp.function_name("business_events_replay")
@bp.route(route="business-events/replay/{event_id?}", methods=["POST"], auth_level=func.AuthLevel.ADMIN)
def business_events_replay(req: func.HttpRequest) -> func.HttpResponse:
    """Process one poisoned event (by EventId) or all of them (up to ``limit`` per call) again."""
    event_id = req.route_params.get("event_id") or None
    force = (req.params.get("force") or "").lower() in ("1", "true", "yes")
    try:
        limit = max(1, min(1000, int(req.params.get("limit") or 100)))
    except ValueError:
        invalid = {"status": "rejected", "error": "invalid_limit", "message": "limit must be a number"}
        return _json(invalid, 400)
    try:
        after = req.params.get("after") or None
        report = replay_poisoned(get_context(), event_id, force=force, limit=limit, after=after)
    except ConfigurationError as exc:
        log.error("business events replay misconfigured: %s", exc)
        return _json(_MISCONFIGURED, 503)
    status = 404 if event_id and report.not_found else 200
    return _json(report.to_dict(), status)
