"""Real-time populate over HTTP: ``POST /api/populate/{target}`` with a small JSON batch of records for an
allow-listed entity (``POPULATE_HTTP_TARGETS``), answered with one result per record. Function key required.

The body is read by the host before the call, so its size is checked first thing in the pipeline
(413 above ``POPULATE_HTTP_MAX_BYTES``); see shared/pipelines/populate.py for every answer.
"""

from __future__ import annotations

import json
import logging

import azure.functions as func

from shared.context import get_context
from shared.pipelines.populate import populate_request
from shared.settings import ConfigurationError

bp = func.Blueprint()  # type: ignore[no-untyped-call]  # azure-functions leaves __init__ untyped
log = logging.getLogger(__name__)


def _json(body: object, status: int, headers: dict[str, str] | None = None) -> func.HttpResponse:
    return func.HttpResponse(
        json.dumps(body, default=str), status_code=status, mimetype="application/json", headers=headers
    )


@bp.function_name("populate_records")
@bp.route(route="populate/{target}", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
def populate_records(req: func.HttpRequest) -> func.HttpResponse:
    """Write the posted records to the target's entity set; 200/207 with per-record results."""
    try:
        answer = populate_request(  # the populate settings are read (and validated) here, on first use
            get_context(),
            req.route_params.get("target", ""),
            req.get_body(),
            legal_entity=req.params.get("legal_entity"),
        )
    except ConfigurationError as exc:
        log.error("configuration invalid: %s", exc)
        return _json({"error": "the app is misconfigured", "problems": list(exc.problems)}, 503)
    return _json(answer.body, answer.status, answer.headers)
