"""Starlette glue for /data: turn the HTTP request into an ODataRequest and run the sans-IO service."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, quote

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from emulator.odata.messages import ODataRequest
from emulator.odata.service import ODataService

METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "MERGE"]


def to_odata_request(request: Request, body: bytes, default_company: str) -> ODataRequest:
    """Links are built from the request's own scheme://host:port, so they hold whichever port served it."""
    principal = getattr(request.state, "principal", None)
    company = str(getattr(principal, "default_company", None) or default_company).lower()
    raw: bytes = request.scope.get("raw_path") or quote(request.scope["path"]).encode("ascii")
    path = raw.decode("latin-1")
    marker = path.find("/data")
    path = path[marker + len("/data") :].lstrip("/") if marker >= 0 else ""
    query_string = request.scope.get("query_string", b"").decode("latin-1")
    return ODataRequest(
        method=request.method,
        path=path,
        query=parse_qsl(query_string, keep_blank_values=True),
        headers={k.lower(): v for k, v in request.headers.items()},
        body=body,
        base_url=f"{request.url.scheme}://{request.url.netloc}",
        company=company,
        query_string=query_string,
    )


def routes(state: Any) -> list[BaseRoute]:
    """Everything under /data: service document, $metadata, $batch, sets, keys, navigations, actions."""
    service = ODataService(state.odata)
    default_company = str(state.config.default_company)

    async def endpoint(request: Request) -> Response:
        body = await request.body()
        odata_request = to_odata_request(request, body, default_company)
        answer = await run_in_threadpool(service.handle, odata_request)
        return Response(answer.body, status_code=answer.status, headers=dict(answer.headers))

    return [
        Route("/data", endpoint, methods=METHODS, name="odata_root"),
        Route("/data/{rest:path}", endpoint, methods=METHODS, name="odata"),
    ]
