"""Admin routes of the DMF under ``/_emulator/dmf/`` (no auth, loopback only; documented in docs/emulator.md).

executions (list, one, force a final status, forget all), settings (step delay, error-keys polls, ...), data
projects (list, define e.g. an export project, delete), DMF entity names, and the ``dmf`` container's blobs.
"""

from __future__ import annotations

from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute

from emulator.admin_http import AdminError, Handler, admin_routes, json_object
from emulator.dmf import definitions
from emulator.dmf.datafiles import canonical_format
from emulator.dmf.model import DmfError, ExecutionStatus


def _project(name: str, body: dict[str, Any], store: Any) -> definitions.DefinitionGroup:
    operation = str(body.get("operation", "Export")).capitalize()
    if operation not in ("Import", "Export"):
        raise AdminError(400, "'operation' must be Import or Export")
    items = body.get("entities")
    if not isinstance(items, list) or not items:
        raise AdminError(400, "'entities' must be a non-empty list of {entity, source_format, level, ...}")
    entities: list[definitions.GroupEntity] = []
    for number, item in enumerate(items, start=1):
        if isinstance(item, str):
            item = {"entity": item}
        if not isinstance(item, dict) or not isinstance(item.get("entity"), str):
            raise AdminError(400, "each entity needs 'entity' (the DMF entity name, e.g. 'Customers V3')")
        try:
            entity = definitions.resolve_entity(store, item["entity"])
            fmt = canonical_format(str(item.get("source_format") or "CSV-Unicode"))
        except DmfError as exc:
            raise AdminError(400, exc.message) from None
        entities.append(
            definitions.GroupEntity(
                entity.name,
                fmt,
                int(item.get("execution_unit", 1)),
                int(item.get("level", number)),
                int(item.get("sequence", 1)),
            )
        )
    return definitions.DefinitionGroup(name, str(body.get("description") or name), operation, entities)


def routes(state: Any) -> list[BaseRoute]:
    dmf = state.dmf
    store = state.odata

    def execution_or_404(execution_id: str) -> Any:
        execution = dmf.executions.get(execution_id)
        if execution is None:
            raise AdminError(404, f"no execution '{execution_id}'")
        return execution

    async def list_executions(request: Request) -> Response:
        return JSONResponse({"executions": [e.summary_json() for e in dmf.executions]})

    async def get_execution(request: Request) -> Response:
        return JSONResponse(execution_or_404(request.path_params["execution_id"]).summary_json())

    async def force_status(request: Request) -> Response:
        execution = execution_or_404(request.path_params["execution_id"])
        body = await json_object(request)
        try:
            dmf.force(execution, ExecutionStatus(str(body.get("status"))))
        except ValueError as exc:
            raise AdminError(400, str(exc)) from None
        return JSONResponse(execution.summary_json())

    async def clear_executions(request: Request) -> Response:
        for execution in dmf.executions.clear():
            execution.request_cancel()
        return JSONResponse({"executions": []})

    async def get_settings(request: Request) -> Response:
        return JSONResponse(dmf.settings.to_json())

    async def put_settings(request: Request) -> Response:
        try:
            dmf.settings.update(await json_object(request))
        except ValueError as exc:
            raise AdminError(400, str(exc)) from None
        return JSONResponse(dmf.settings.to_json())

    async def delete_settings(request: Request) -> Response:
        dmf.reset_settings()
        return JSONResponse(dmf.settings.to_json())

    async def list_projects(request: Request) -> Response:
        groups = await run_in_threadpool(definitions.list_groups, store)
        return JSONResponse({"projects": [g.to_json() for g in groups]})

    async def put_project(request: Request) -> Response:
        group = _project(request.path_params["name"], await json_object(request), store)
        await run_in_threadpool(definitions.save_group, store, group)
        return JSONResponse(group.to_json())

    async def delete_project(request: Request) -> Response:
        name = request.path_params["name"]
        if not await run_in_threadpool(definitions.delete_group, store, name):
            raise AdminError(404, f"no data project '{name}'")
        return Response(status_code=204)

    async def list_entities(request: Request) -> Response:
        return JSONResponse(
            {
                "entities": [
                    {
                        "entity": e.name,
                        "aot_name": e.aot_name,
                        "entity_set": e.set_name,
                        "keys": [k.upper() for k in e.entity.keys if k != "dataAreaId"],
                        "staging_fields": [e.staging_field(p) for p in e.export_properties()],
                    }
                    for e in definitions.dmf_entities(store)
                ]
            }
        )

    async def list_blobs(request: Request) -> Response:
        try:
            blobs = await run_in_threadpool(dmf.blobs.list, request.query_params.get("prefix") or None)
        except DmfError as exc:
            raise AdminError(503, exc.message) from None
        return JSONResponse({"container": "dmf", "endpoint": dmf.blobs.endpoint, "blobs": blobs})

    table: list[tuple[str, Handler, str]] = [
        ("/_emulator/dmf/executions", list_executions, "GET"),
        ("/_emulator/dmf/executions", clear_executions, "DELETE"),
        ("/_emulator/dmf/executions/{execution_id:path}/status", force_status, "POST"),
        ("/_emulator/dmf/executions/{execution_id:path}", get_execution, "GET"),
        ("/_emulator/dmf/settings", get_settings, "GET"),
        ("/_emulator/dmf/settings", put_settings, "PUT"),
        ("/_emulator/dmf/settings", delete_settings, "DELETE"),
        ("/_emulator/dmf/projects", list_projects, "GET"),
        ("/_emulator/dmf/projects/{name}", put_project, "PUT"),
        ("/_emulator/dmf/projects/{name}", delete_project, "DELETE"),
        ("/_emulator/dmf/entities", list_entities, "GET"),
        ("/_emulator/dmf/blobs", list_blobs, "GET"),
    ]
    return admin_routes(table)
