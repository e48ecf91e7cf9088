"""The HTTP populate pipeline (blueprints/populate.py): a small JSON batch of records for an allow-listed
entity, written like a file of an ``odata`` route (shared/populate/), answered with one result per record.

Answers (``status``, JSON body): 200 every record written (created, updated or unchanged); 207 some or all
records failed (the body says which and why); 400 malformed input or a legal entity the target does not
take; 404 an entity that is not allow-listed; 413 too large (bytes or records); 502 D365 could not be asked
for the entity's ``$metadata``; 500 a configured entity set D365 does not know; 503 (with ``Retry-After``)
D365 was unavailable or the time limit (POPULATE_HTTP_TIME_LIMIT_SECONDS) ran out before anything was
written: the records are ``not_attempted``, send the request again later. A repeated request is safe:
records are read by key before they are written, so the repeat answers ``unchanged``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from shared.context import AppContext
from shared.d365.errors import D365Error
from shared.logs import log_event
from shared.populate.deadline import Deadline
from shared.populate.metadata import UnknownEntitySet
from shared.populate.records import InputError, RecordLimitExceeded, parse_json, records_from_json
from shared.populate.run import entity_model, write_records
from shared.populate.settings import PopulateSettings
from shared.redact import redact_text
from shared.status import Outcome

__all__ = ["HttpAnswer", "populate_request"]

log = logging.getLogger(__name__)
_LEGAL_ENTITY_CHARS = set("abcdefghijklmnopqrstuvwxyz0123456789")
RETRY_AFTER_SECONDS = 30  # what a 503 asks the caller to wait (D365's own Retry-After when it gave one)


@dataclass(frozen=True)
class HttpAnswer:
    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)


def _error(status: int, message: str, **extra: Any) -> HttpAnswer:
    return HttpAnswer(status, {"error": redact_text(message), **extra})


def populate_request(
    context: AppContext,
    target_name: str,
    body: bytes,
    *,
    legal_entity: str | None = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> HttpAnswer:
    """Write the records in ``body`` (a JSON array of objects, or ``{"records": [...]}``) to the target."""
    settings = context.settings.section(PopulateSettings)
    deadline = Deadline(settings.http_time_limit_seconds, clock=clock)
    target = settings.http_target(target_name)
    if target is None:
        allowed = sorted(t.name for t in settings.http_targets)
        return _error(
            404,
            f"{target_name!r} is not an allow-listed populate target (POPULATE_HTTP_TARGETS)",
            allowed=allowed,
        )
    limit_records = target.entity.max_records
    if len(body) > settings.http_max_bytes:
        return _error(
            413,
            f"the request body is {len(body)} bytes; at most {settings.http_max_bytes} are taken "
            "(POPULATE_HTTP_MAX_BYTES): send fewer records per request, or drop large sets as a file on a "
            "DMF import route",
        )
    try:
        parsed = parse_json(body.decode("utf-8-sig"))
        records = records_from_json(parsed, limit=limit_records)
    except RecordLimitExceeded:
        return _error(
            413,
            f"more than {limit_records} records in one request (the limit of {target.name!r}): split them "
            "into several requests, or drop large sets as a file on a DMF import route",
        )
    except InputError as exc:
        return _error(400, f"malformed request: {exc}")
    except (UnicodeDecodeError, ValueError) as exc:
        return _error(400, f"malformed request: the body is not valid UTF-8 JSON ({exc})")
    if not records:
        return _error(400, "malformed request: no records")
    company = target.legal_entity
    if legal_entity:
        wanted = legal_entity.strip().lower()
        if not target.legal_entity_from_request and wanted != target.legal_entity:
            only = target.legal_entity or "(the default company)"
            return _error(400, f"{target.name!r} writes to legal entity {only!r} only")
        if not wanted or len(wanted) > 10 or not set(wanted) <= _LEGAL_ENTITY_CHARS:
            return _error(400, f"legal_entity {legal_entity!r} must be 1-10 letters or digits")
        company = wanted
    try:
        model = entity_model(context, target.entity.entity_set)
    except UnknownEntitySet as exc:
        log.error("populate target %s is misconfigured: %s", target.name, exc)
        return _error(500, f"populate target {target.name!r} is misconfigured: {exc}")
    except D365Error as exc:
        return _error(502, f"could not read the entity's $metadata from D365: {exc}")
    result = write_records(
        context, target.entity, model, records, legal_entity=company, sleep=sleep, deadline=deadline
    )
    answer = {"name": target.name, "legal_entity": company, **result.to_dict(), "message": result.message()}
    status = 503 if result.retry_later else 200 if result.outcome is Outcome.SUCCEEDED else 207
    log_event(
        log,
        "POPULATE_HTTP",
        logging.INFO if status == 200 else logging.WARNING,
        result.message(),
        target=target.name,
        legal_entity=company,
        status=status,
        outcome=str(result.outcome),
        records=len(result.records),
        failed=result.failed,
        not_attempted=result.not_attempted,
    )
    if result.retry_later:
        answer["error"] = redact_text(
            f"nothing was written: {result.unavailable}; send the same request again later (it is safe)"
        )
        return HttpAnswer(503, answer, {"Retry-After": str(RETRY_AFTER_SECONDS)})
    return HttpAnswer(status, answer)
