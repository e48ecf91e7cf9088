"""Admin API of the business events family, under ``/_emulator/business-events`` (no auth, like the rest of
``/_emulator``): the catalog and its schemas, endpoints, activations, raising on demand, the error log
(list, download payload, resend, clear), the delivery log, delivery settings and fault options.
Documented with curl examples in docs/emulator.md ("Business events").
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute

from emulator.admin_http import Handler, admin_routes, json_object
from emulator.business_events.catalog import CATALOG, event_definition
from emulator.business_events.model import ConfigError, DeliveryFaults, Endpoint
from emulator.business_events.payloads import PayloadError, schema_payload

if TYPE_CHECKING:
    from emulator.business_events.service import BusinessEvents
    from emulator.state import EmulatorState

__all__ = ["routes"]

PREFIX = "/_emulator/business-events"


def _legal_entity(value: Any) -> str | None:
    """Blank (or absent) means all legal entities, as on the activation form."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if not isinstance(value, str):
        raise ConfigError("'legal_entity' must be a string (blank or null: all legal entities)")
    return value.strip()


class _Admin:
    def __init__(self, state: EmulatorState) -> None:
        self.state = state

    @property
    def events(self) -> BusinessEvents:
        events: BusinessEvents = self.state.business_events
        return events

    # -- overview, catalog ----------------------------------------------------------------------------------

    async def status(self, request: Request) -> Response:
        model = self.events.model
        with model.lock:
            answer = {
                "pending": self.events.delivery.pending(),
                "endpoints": len(model.endpoints),
                "activations": len(model.activations),
                "errors": len(model.errors),
                "counters": dict(model.counters),
                "settings": model.settings.to_json(),
                "faults": model.faults.to_json(),
            }
        return JSONResponse(answer)

    async def catalog(self, request: Request) -> Response:
        return JSONResponse({"events": [d.to_json() for d in CATALOG.values()]})

    async def catalog_event(self, request: Request) -> Response:
        return JSONResponse(event_definition(request.path_params["event_id"]).to_json())

    async def schema(self, request: Request) -> Response:
        """Like the catalog's "Download schema": the payload shape with empty values, as a file."""
        definition = event_definition(request.path_params["event_id"])
        return JSONResponse(
            schema_payload(definition),
            headers={"Content-Disposition": f'attachment; filename="{definition.event_id}.json"'},
        )

    # -- endpoints ------------------------------------------------------------------------------------------

    async def list_endpoints(self, request: Request) -> Response:
        with self.events.model.lock:
            endpoints = [e.to_json() for e in self.events.model.endpoints.values()]
        return JSONResponse({"endpoints": endpoints})

    async def create_endpoint(self, request: Request) -> Response:
        endpoint = self.events.model.put_endpoint(Endpoint.from_json(await json_object(request)))
        return JSONResponse(endpoint.to_json(), status_code=201)

    async def get_endpoint(self, request: Request) -> Response:
        return JSONResponse(self.events.model.endpoint(request.path_params["key"]).to_json())

    async def update_endpoint(self, request: Request) -> Response:
        model, body = self.events.model, await json_object(request)
        with model.lock:
            existing = model.endpoint(request.path_params["key"])
            endpoint = model.put_endpoint(Endpoint.from_json(body, existing=existing))
        self.events.forget_cached_url(existing.key_vault_secret)
        return JSONResponse(endpoint.to_json())

    async def delete_endpoint(self, request: Request) -> Response:
        self.events.model.delete_endpoint(request.path_params["key"])
        return Response(status_code=204)

    # -- activations ----------------------------------------------------------------------------------------

    async def list_activations(self, request: Request) -> Response:
        event = request.query_params.get("event")
        event_id = event_definition(event).event_id if event else None
        with self.events.model.lock:
            found = [
                a.to_json()
                for a in self.events.model.activations.values()
                if event_id is None or a.event_id == event_id
            ]
        return JSONResponse({"activations": found})

    async def activate(self, request: Request) -> Response:
        """``{"event": id, "legal_entity": "usmf" | null (all), "endpoint": id or name}``."""
        body = await json_object(request)
        event, endpoint = body.get("event"), body.get("endpoint")
        if not isinstance(event, str) or not isinstance(endpoint, str):
            raise ConfigError(
                "'event' (a business event id) and 'endpoint' (an endpoint id or name) are required"
            )
        activation = self.events.model.activate(
            event_definition(event).event_id, _legal_entity(body.get("legal_entity")), endpoint
        )
        return JSONResponse(activation.to_json(), status_code=201)

    async def deactivate_one(self, request: Request) -> Response:
        self.events.model.deactivate(request.path_params["activation_id"])
        return Response(status_code=204)

    async def deactivate(self, request: Request) -> Response:
        """``{"event": id, "legal_entity"?: ..., "endpoint"?: id or name}``: every matching activation."""
        body = await json_object(request)
        event = body.get("event")
        if not isinstance(event, str):
            raise ConfigError("'event' (a business event id) is required")
        event_id = event_definition(event).event_id
        model = self.events.model
        with model.lock:
            endpoint_id = model.endpoint(str(body["endpoint"])).id if body.get("endpoint") else None
            entity = _legal_entity(body.get("legal_entity"))
            removed = [
                a
                for a in model.activations.values()
                if a.event_id == event_id
                and (endpoint_id is None or a.endpoint_id == endpoint_id)
                and ("legal_entity" not in body or (a.legal_entity or "").lower() == (entity or "").lower())
            ]
            for activation in removed:
                del model.activations[activation.id]
        return JSONResponse({"deactivated": [a.to_json() for a in removed]})

    # -- raising --------------------------------------------------------------------------------------------

    async def raise_event(self, request: Request) -> Response:
        """``{"event": id, "legal_entity"?: "usmf", "fields"?: {...}}`` -> 202 with the EventId, the
        ControlNumber and the deliveries queued (none when the event is not activated there)."""
        body = await json_object(request)
        event, fields = body.get("event"), body.get("fields", {})
        if not isinstance(event, str):
            raise ConfigError("'event' (a business event id) is required")
        if not isinstance(fields, dict):
            raise ConfigError("'fields' must be an object of contract field values")
        raised = self.events.raise_event(event, _legal_entity(body.get("legal_entity")), fields)
        answer = raised.to_json()
        answer["activated"] = bool(raised.deliveries)
        return JSONResponse(answer, status_code=202)

    # -- error log ------------------------------------------------------------------------------------------

    async def list_errors(self, request: Request) -> Response:
        with self.events.model.lock:
            errors = [e.to_json() for e in self.events.model.errors.values()]
        return JSONResponse({"errors": errors})

    async def get_error(self, request: Request) -> Response:
        entry = self.events.model.error(request.path_params["error_id"])
        answer = entry.to_json()
        answer["attempt_log"] = [a.to_json() for a in entry.delivery.attempts]
        return JSONResponse(answer)

    async def download_payload(self, request: Request) -> Response:
        """The payload exactly as it was posted ("Download payload" on the Errors tab)."""
        record = self.events.model.error(request.path_params["error_id"]).delivery
        filename = f"{record.business_event_id}-{record.event_id}.json"
        return Response(
            record.payload,
            media_type="application/json",
            headers={"Content-Disposition": f'attachment; filename="{filename}"'},
        )

    async def resend_one(self, request: Request) -> Response:
        return JSONResponse({"resent": [self._resend(request.path_params["error_id"])]}, status_code=202)

    async def resend_all(self, request: Request) -> Response:
        with self.events.model.lock:
            ids = list(self.events.model.errors)
        return JSONResponse({"resent": [self._resend(i) for i in ids]}, status_code=202)

    def _resend(self, error_id: str) -> dict[str, Any]:
        """Queue the same payload again (same EventId and ControlNumber); the entry leaves the error log and
        comes back as a new one if every attempt fails again."""
        model = self.events.model
        with model.lock:
            entry = model.error(error_id)
            endpoint = model.endpoints.get(entry.delivery.endpoint_id)
            if endpoint is None:
                raise ConfigError(f"the endpoint of error '{error_id}' was deleted; it cannot be resent", 409)
            model.take_error(error_id)
        again = self.events.delivery.resend(entry.delivery, endpoint)
        return {"error": error_id, "delivery": again.id}

    async def delete_error(self, request: Request) -> Response:
        self.events.model.take_error(request.path_params["error_id"])
        return Response(status_code=204)

    async def clear_errors(self, request: Request) -> Response:
        with self.events.model.lock:
            self.events.model.errors.clear()
        return JSONResponse({"errors": []})

    # -- delivery log ---------------------------------------------------------------------------------------

    async def deliveries(self, request: Request) -> Response:
        """Most recent last; filters ``endpoint`` (id), ``event`` (BusinessEventId), ``outcome``;
        ``limit``."""
        query = request.query_params
        try:
            limit = max(1, int(query.get("limit") or 100))
        except ValueError:
            raise ConfigError("'limit' must be an integer") from None
        event = query.get("event")
        event_id = event_definition(event).event_id if event else None
        with self.events.model.lock:
            found = [
                r.summary()
                for r in self.events.model.log
                if (not query.get("endpoint") or r.endpoint_id == query["endpoint"])
                and (event_id is None or r.business_event_id == event_id)
                and (not query.get("outcome") or r.outcome == query["outcome"])
            ]
        return JSONResponse({"deliveries": found[-limit:]})

    async def clear_deliveries(self, request: Request) -> Response:
        with self.events.model.lock:
            self.events.model.log.clear()
        return JSONResponse({"deliveries": []})

    # -- settings and faults --------------------------------------------------------------------------------

    async def get_settings(self, request: Request) -> Response:
        return JSONResponse(self.events.model.settings.to_json())

    async def put_settings(self, request: Request) -> Response:
        """Partial update: ``retry_count``, ``retry_wait_ms``, ``timeout_ms``, ``processing_threads``, ..."""
        model = self.events.model
        body = await json_object(request)
        with model.lock:
            model.settings = model.settings.updated(body)
        self.events.delivery.wake()
        return JSONResponse(model.settings.to_json())

    async def get_faults(self, request: Request) -> Response:
        return JSONResponse(self.events.model.faults.to_json())

    async def put_faults(self, request: Request) -> Response:
        """Replace the global fault options (an endpoint's own ``faults`` win over them)."""
        faults = DeliveryFaults.from_json(await json_object(request))
        with self.events.model.lock:
            self.events.model.faults = faults
        return JSONResponse(faults.to_json())

    async def delete_faults(self, request: Request) -> Response:
        with self.events.model.lock:
            self.events.model.faults = DeliveryFaults()
        return JSONResponse(self.events.model.faults.to_json())


def routes(state: EmulatorState) -> list[BaseRoute]:
    admin = _Admin(state)

    table: list[tuple[str, Handler, str]] = [
        ("", admin.status, "GET"),
        ("/catalog", admin.catalog, "GET"),
        ("/catalog/{event_id}", admin.catalog_event, "GET"),
        ("/catalog/{event_id}/schema", admin.schema, "GET"),
        ("/endpoints", admin.list_endpoints, "GET"),
        ("/endpoints", admin.create_endpoint, "POST"),
        ("/endpoints/{key}", admin.get_endpoint, "GET"),
        ("/endpoints/{key}", admin.update_endpoint, "PATCH"),
        ("/endpoints/{key}", admin.delete_endpoint, "DELETE"),
        ("/activations", admin.list_activations, "GET"),
        ("/activations", admin.activate, "POST"),
        ("/activations/deactivate", admin.deactivate, "POST"),
        ("/activations/{activation_id}", admin.deactivate_one, "DELETE"),
        ("/raise", admin.raise_event, "POST"),
        ("/errors", admin.list_errors, "GET"),
        ("/errors", admin.clear_errors, "DELETE"),
        ("/errors/resend", admin.resend_all, "POST"),
        ("/errors/{error_id}", admin.get_error, "GET"),
        ("/errors/{error_id}", admin.delete_error, "DELETE"),
        ("/errors/{error_id}/payload", admin.download_payload, "GET"),
        ("/errors/{error_id}/resend", admin.resend_one, "POST"),
        ("/deliveries", admin.deliveries, "GET"),
        ("/deliveries", admin.clear_deliveries, "DELETE"),
        ("/settings", admin.get_settings, "GET"),
        ("/settings", admin.put_settings, "PUT"),
        ("/faults", admin.get_faults, "GET"),
        ("/faults", admin.put_faults, "PUT"),
        ("/faults", admin.delete_faults, "DELETE"),
    ]
    # ConfigError carries its status; PayloadError (a bad event id or field) is a 400.
    return admin_routes(
        ((PREFIX + path, handler, method) for path, handler, method in table), ConfigError, PayloadError
    )
