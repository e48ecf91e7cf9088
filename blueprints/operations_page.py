"""The operations page (function key): pipeline counts, in-flight and stuck imports, recent failures with
D365's detail, recent business events and exports, as one server-rendered HTML page.

One function serves both URLs, so the function key that opened the page (``?code=``) also opens its links;
a key sent in the ``x-functions-key`` header is never copied into the page (the links then carry no key,
and the page says so). Open it with the function key, not the master key: the links carry the key as is.

- ``GET /api/operations``: the page (``?format=json``: the same overview as JSON);
- ``GET /api/operations/record?path=<container>/<blob>``: one stored status record as JSON (only status
  records of the app's own containers; see ``shared/pipelines/overview/records.py``).
"""

from __future__ import annotations

import json
import logging
from urllib.parse import urlsplit

import azure.functions as func

from shared.context import get_context
from shared.pipelines.overview import PageLinks, gather_overview, read_status_record, render_page
from shared.pipelines.overview.html import SECURITY_HEADERS
from shared.settings import ConfigurationError

bp = func.Blueprint()  # type: ignore[no-untyped-call]  # azure-functions leaves __init__ untyped
log = logging.getLogger(__name__)


def _response(body: str, status: int, mimetype: str) -> func.HttpResponse:
    return func.HttpResponse(body, status_code=status, mimetype=mimetype, headers=dict(SECURITY_HEADERS))


def _page_path(req: func.HttpRequest, view: str) -> str:
    path = str(urlsplit(req.url).path).rstrip("/")
    return path.removesuffix(f"/{view}") if view else path


@bp.function_name("operations_page")
@bp.route(route="operations/{view?}", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
def operations_page(req: func.HttpRequest) -> func.HttpResponse:
    view = (req.route_params.get("view") or "").lower()
    if view not in ("", "record"):
        return _response(json.dumps({"error": "not found"}), 404, "application/json")
    try:
        context = get_context()
    except ConfigurationError as exc:
        log.error("configuration invalid: %s", exc)
        body = {"status": "misconfigured", "problems": list(exc.problems)}
        return _response(json.dumps(body), 503, "application/json")
    if view == "record":
        answer = read_status_record(context, req.params.get("path", ""))
        return _response(answer.body, answer.status, "application/json")
    overview = gather_overview(context)
    if req.params.get("format", "").lower() == "json":
        return _response(json.dumps(overview.to_dict(), indent=2), 200, "application/json")
    key = req.params.get("code") or None
    header_key = bool(req.headers.get("x-functions-key"))
    links = PageLinks(_page_path(req, view), key, header_key=header_key)
    return _response(render_page(overview, links), 200, "text/html")
