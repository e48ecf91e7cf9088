"""Operations endpoints: liveness (anonymous) and readiness (function key) of this app instance."""

from __future__ import annotations

import json
import logging

import azure.functions as func

from shared.context import get_context
from shared.pipelines.health import check_readiness
from shared.settings import ConfigurationError

bp = func.Blueprint()  # type: ignore[no-untyped-call]  # azure-functions leaves __init__ untyped
log = logging.getLogger(__name__)


def _json(body: object, status: int) -> func.HttpResponse:
    return func.HttpResponse(json.dumps(body), status_code=status, mimetype="application/json")


@bp.function_name("health_live")
@bp.route(route="health", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def health_live(req: func.HttpRequest) -> func.HttpResponse:
    """The process answers; says nothing about dependencies (use /api/health/ready for that)."""
    return _json({"status": "alive"}, 200)


@bp.function_name("health_ready")
@bp.route(route="health/ready", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
def health_ready(req: func.HttpRequest) -> func.HttpResponse:
    """Configuration valid and D365, its token and blob storage reachable: 200, else 503 with each check."""
    try:
        context = get_context()
    except ConfigurationError as exc:
        log.error("configuration invalid: %s", exc)
        return _json({"status": "misconfigured", "problems": list(exc.problems)}, 503)
    report = check_readiness(context)
    return _json(report.to_dict(), 200 if report.ok else 503)
