"""The sans-IO OData handler: ``ODataService.handle(ODataRequest) -> ODataResponse``.

HTTP routes and every ``$batch`` part go through this one entry point, so a request behaves the same
whichever way it arrives. Every failure leaves as the D365 error envelope (ref §1.7).
"""

from __future__ import annotations

import logging

from emulator.odata.actions import invoke
from emulator.odata.errors import ODataError, error_response
from emulator.odata.messages import ODataRequest, ODataResponse
from emulator.odata.metadata import metadata_response, service_document
from emulator.odata.paths import Target, parse_path
from emulator.odata.query import ODataQueryError
from emulator.odata.reads import QueryOptions, Reader
from emulator.odata.store import ODataStore
from emulator.odata.writes import Writer

log = logging.getLogger(__name__)

_ALLOWED = {
    "service": ("GET",), "metadata": ("GET",), "batch": ("POST",),
    "collection": ("GET", "POST"), "count": ("GET",),
    "entity": ("GET", "PATCH", "PUT", "DELETE", "MERGE"),
    "navigation": ("GET",), "navigation_count": ("GET",), "property": ("GET",), "property_value": ("GET",),
    "action": ("POST",),
}  # fmt: skip


class ODataService:
    """Routes one request to the reader, writer, action registry, metadata or $batch."""

    def __init__(self, store: ODataStore) -> None:
        self.store = store
        self.reader = Reader(store)
        self.writer = Writer(store, self.reader)

    def handle(self, request: ODataRequest) -> ODataResponse:
        try:
            return self._dispatch(request)
        except ODataError as exc:
            return exc.to_response()
        except ODataQueryError as exc:
            return error_response(400, exc.message)
        except Exception as exc:  # an emulator bug must still answer in the D365 envelope
            log.exception("OData request failed: %s %s", request.method, request.path)
            return error_response(500, f"{type(exc).__name__}: {exc}", error_type=type(exc).__name__)

    def _dispatch(self, request: ODataRequest) -> ODataResponse:
        method = "GET" if request.method.upper() == "HEAD" else request.method.upper()
        target = parse_path(request.path, self.store.catalog, self.store.actions, request.url)
        if method not in _ALLOWED[target.kind]:
            raise ODataError(
                405,
                f"The requested resource does not support http method '{request.method}'.",
                headers=[("Allow", ", ".join(_ALLOWED[target.kind]))],
            )
        if target.kind == "batch":
            from emulator.odata.batch import handle_batch

            return handle_batch(self, request)
        options = QueryOptions.parse(request.query)
        if target.kind == "service":
            return service_document(request, self.store.catalog)
        if target.kind == "metadata":
            return metadata_response(self.store.catalog, self.store.actions)
        if target.kind == "action":
            return self._action(request, target, options)
        entity = target.entity
        assert entity is not None
        if target.kind == "collection":
            if method == "POST":
                return self.writer.create(request, entity)
            return self.reader.collection(
                request, entity, options, self.reader.scope(entity, request, options)
            )
        if target.kind == "count":
            return self.reader.count(request, entity, options, self.reader.scope(entity, request, options))
        key = target.key
        assert key is not None
        if target.kind == "entity":
            if method == "GET":
                return self.reader.entity(request, entity, key, options)
            if method == "DELETE":
                return self.writer.delete(request, entity, key)
            return self.writer.update(request, entity, key, replace=method == "PUT")
        if target.kind in ("navigation", "navigation_count"):
            assert target.navigation is not None
            return self.reader.navigation(
                request, entity, key, target.navigation, options, count=target.kind == "navigation_count"
            )
        assert target.prop is not None
        return self.reader.property(
            request, entity, key, target.prop, target.key_text, raw=target.kind == "property_value"
        )

    def _action(self, request: ODataRequest, target: Target, options: QueryOptions) -> ODataResponse:
        assert target.action is not None
        return invoke(
            self.store,
            target.action,
            request,
            entity=target.entity,
            key=target.key,
            cross_company=options.cross_company,
        )
