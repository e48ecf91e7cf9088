"""HTTP face of the JSON custom services: ``/api/services`` listings and operation calls (ref §6).

Authentication and throttling happen in the D365 gate middleware before these routes run; the caller is on
``request.state.principal``. Calls run inline on the event loop, so handlers must be quick and thread-safe.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from emulator.services.registry import ServiceFault, ServiceRegistry
from emulator.state import Principal

__all__ = ["routes"]


def routes(state: Any) -> list[BaseRoute]:
    """``state`` provides ``services`` (ServiceRegistry) and ``config.default_company``."""
    api = _ServicesApi(state)
    return [
        Route("/api/services", api.list_groups, methods=["GET"]),
        Route("/api/services/{group}", api.list_services, methods=["GET"]),
        Route("/api/services/{group}/{service}", api.list_operations, methods=["GET"]),
        Route("/api/services/{group}/{service}/{operation}", api.describe, methods=["GET"]),
        Route("/api/services/{group}/{service}/{operation}", api.call, methods=["POST"]),
    ]


def _not_found(request: Request, detail: str) -> JSONResponse:
    """404 for an unknown group/service/operation. Shape UNCONFIRMED: ASP.NET Web API's, plus a detail."""
    return JSONResponse(
        {
            "Message": f"No HTTP resource was found that matches the request URI '{request.url}'.",
            "MessageDetail": detail,
        },
        status_code=404,
    )


class _ServicesApi:
    def __init__(self, state: Any) -> None:
        self._state = state

    @property
    def registry(self) -> ServiceRegistry:
        registry: ServiceRegistry = self._state.services
        return registry

    async def list_groups(self, request: Request) -> Response:
        return JSONResponse({"ServiceGroups": [{"Name": name} for name in self.registry.groups()]})

    async def list_services(self, request: Request) -> Response:
        group = request.path_params["group"]
        names = self.registry.services(group)
        if names is None:
            return _not_found(request, f"Service group '{group}' was not found.")
        return JSONResponse({"Services": [{"Name": name} for name in names]})

    async def list_operations(self, request: Request) -> Response:
        group, service = request.path_params["group"], request.path_params["service"]
        names = self.registry.operations(group, service)
        if names is None:
            return _not_found(request, f"Service '{service}' was not found in service group '{group}'.")
        return JSONResponse({"Operations": [{"Name": name} for name in names]})

    async def describe(self, request: Request) -> Response:
        params = request.path_params
        operation = self.registry.find(params["group"], params["service"], params["operation"])
        if operation is None:
            return _not_found(request, self._missing_detail(params))
        return JSONResponse(operation.describe())

    async def call(self, request: Request) -> Response:
        """Run the operation; the return value is the body as is, a fault is HTTP 500 [S34]."""
        params = request.path_params
        operation = self.registry.find(params["group"], params["service"], params["operation"])
        if operation is None:
            return _not_found(request, self._missing_detail(params))
        principal: Principal | None = getattr(request.state, "principal", None)
        company = principal.default_company if principal else str(self._state.config.default_company)
        body = await request.body()
        try:
            result = self.registry.invoke(operation, body, principal=principal, company=company)
        except ServiceFault as fault:
            return JSONResponse(fault.body(), status_code=500)
        if operation.returns.lower() == "void":
            return Response(status_code=200)  # UNCONFIRMED: a void operation answers 200 with no body
        return JSONResponse(result)

    def _missing_detail(self, params: dict[str, Any]) -> str:
        group, service, operation = params["group"], params["service"], params["operation"]
        if self.registry.services(group) is None:
            return f"Service group '{group}' was not found."
        if self.registry.operations(group, service) is None:
            return f"Service '{service}' was not found in service group '{group}'."
        return f"Operation '{operation}' was not found in service '{service}'."
