"""What every admin module under ``/_emulator/`` shares: the error a handler raises for a bad request,
reading the JSON body and integer query parameters, and the route table whose handlers answer that error
as ``{"error": message}`` with its status.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

__all__ = ["AdminError", "Handler", "admin_routes", "answering_errors", "int_param", "json_object"]

Handler = Callable[[Request], Awaitable[Response]]


class AdminError(Exception):
    """A bad admin request, answered as ``{"error": message}`` with ``status``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


async def json_object(request: Request) -> dict[str, Any]:
    """The body as a JSON object; an empty body is ``{}``."""
    raw = await request.body()
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except ValueError as exc:
        raise AdminError(400, f"invalid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise AdminError(400, "the body must be a JSON object")
    return body


def int_param(request: Request, name: str, default: int) -> int:
    value = request.query_params.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise AdminError(400, f"'{name}' must be an integer") from None


def answering_errors(handler: Handler, *also: type[Exception]) -> Handler:
    """``handler``, answering an ``AdminError`` (or one of ``also``) as ``{"error": message}`` with the
    error's ``status`` (400 when it has none)."""
    caught: tuple[type[Exception], ...] = (AdminError, *also)

    async def endpoint(request: Request) -> Response:
        try:
            return await handler(request)
        except caught as exc:
            return JSONResponse({"error": str(exc)}, status_code=getattr(exc, "status", 400))

    return endpoint


def admin_routes(table: Iterable[tuple[str, Handler, str]], *also: type[Exception]) -> list[BaseRoute]:
    """One route per ``(path, handler, method)``, each answering errors as ``answering_errors`` does."""
    return [
        Route(path, answering_errors(handler, *also), methods=[method]) for path, handler, method in table
    ]
