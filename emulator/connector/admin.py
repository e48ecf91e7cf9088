"""Admin routes of the recurring-integrations family, under ``/_emulator/connector/`` (no auth, like the
rest of the admin API): recurring data jobs, on-demand exports, settings (visibility timeout, processing
pace, enqueue size limit, DownloadLocation base) and the message journal. Documented in docs/emulator.md.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute

from emulator.admin_http import AdminError, Handler, admin_routes, json_object
from emulator.connector.model import Activity, Direction, JobType, MessageStatus, normalize_id

if TYPE_CHECKING:
    from emulator.connector.service import Connector

__all__ = ["routes"]


_FIELDS = {
    "name",
    "direction",
    "job_type",
    "data_project",
    "entity",
    "legal_entity",
    "source_format",
    "allowed_app_ids",
    "process_in_order",
    "export_on_change",
}


def activity_from_json(body: dict[str, Any], base: Activity | None, default_company: str) -> Activity:
    """A new activity from ``body``, or ``base`` with the fields ``body`` gives changed."""
    unknown = set(body) - _FIELDS - {"activity_id"}
    if unknown:
        raise AdminError(400, f"unknown field(s): {', '.join(sorted(unknown))}")
    get = body.get
    try:
        direction = Direction(get("direction", base.direction if base else Direction.IMPORT))
        job_type = JobType(get("job_type", base.job_type if base else JobType.FILE))
    except ValueError as exc:
        raise AdminError(400, f"{exc}: direction is import|export, job_type is File|DataPackage") from None
    policy = get("allowed_app_ids", base.allowed_app_ids if base else None)
    if policy is not None and (
        not isinstance(policy, list | tuple) or not all(isinstance(p, str) for p in policy)
    ):
        raise AdminError(400, "'allowed_app_ids' must be a list of client ids, or null for any app")
    activity_id = normalize_id(str(get("activity_id") or (base.activity_id if base else uuid.uuid4())))
    try:
        uuid.UUID(activity_id)
    except ValueError:
        raise AdminError(400, f"activity_id '{activity_id}' is not a GUID") from None
    data_project = get("data_project", base.data_project if base else None)
    if not isinstance(data_project, str) or not data_project:
        raise AdminError(400, "'data_project' (the data project the job runs) is required")
    entity = get("entity", base.entity if base else None)
    return Activity(
        activity_id=activity_id,
        name=str(get("name", base.name if base else f"Recurring {direction.value} {activity_id[:8]}")),
        direction=direction,
        job_type=job_type,
        data_project=data_project,
        entity=str(entity) if entity else None,
        legal_entity=str(get("legal_entity", base.legal_entity if base else default_company)).lower(),
        source_format=get("source_format", base.source_format if base else None),
        allowed_app_ids=tuple(p.lower() for p in policy) if policy is not None else None,
        process_in_order=bool(get("process_in_order", base.process_in_order if base else False)),
        export_on_change=bool(get("export_on_change", base.export_on_change if base else False)),
    )


class _Admin:
    def __init__(self, state: Any) -> None:
        self.state = state

    @property
    def connector(self) -> Connector:
        connector: Connector = self.state.connector
        return connector

    def _activity(self, request: Request) -> Activity:
        activity = self.connector.model.activity(request.path_params["activity_id"])
        if activity is None:
            raise AdminError(404, f"no recurring data job '{request.path_params['activity_id']}'")
        return activity

    async def list_activities(self, request: Request) -> Response:
        activities = list(self.connector.model.activities.values())
        return JSONResponse({"activities": [a.to_json() for a in activities]})

    async def get_activity(self, request: Request) -> Response:
        return JSONResponse(self._activity(request).to_json())

    async def post_activity(self, request: Request) -> Response:
        """Create a job, or replace the one with the same ``activity_id``."""
        body = await json_object(request)
        activity = activity_from_json(body, None, str(self.state.config.default_company))
        existed = self.connector.model.activity(activity.activity_id) is not None
        self.connector.put_activity(activity)
        return JSONResponse(activity.to_json(), status_code=200 if existed else 201)

    async def patch_activity(self, request: Request) -> Response:
        base = self._activity(request)
        body = await json_object(request)
        body.pop("activity_id", None)
        activity = activity_from_json(body, base, str(self.state.config.default_company))
        self.connector.put_activity(activity)
        return JSONResponse(activity.to_json())

    async def delete_activity(self, request: Request) -> Response:
        if not self.connector.remove_activity(request.path_params["activity_id"]):
            raise AdminError(404, f"no recurring data job '{request.path_params['activity_id']}'")
        return Response(status_code=204)

    async def export(self, request: Request) -> Response:
        """Build an export package from the entity data now and queue it for dequeue."""
        activity = self._activity(request)
        if activity.direction is not Direction.EXPORT:
            raise AdminError(400, f"'{activity.name}' is an import job")
        try:
            message = await run_in_threadpool(self.connector.export_now, activity)
        except Exception as exc:  # the DMF's DmfError (unknown or non-export data project) and others
            status = int(getattr(exc, "status", 400) or 400)
            raise AdminError(status if 400 <= status < 600 else 400, str(exc)) from exc
        return JSONResponse(message.to_json(), status_code=201)

    async def get_settings(self, request: Request) -> Response:
        return JSONResponse(self.connector.model.settings.to_json())

    async def put_settings(self, request: Request) -> Response:
        try:
            settings = self.connector.model.update_settings(await json_object(request))
        except ValueError as exc:
            raise AdminError(400, str(exc)) from exc
        return JSONResponse(settings.to_json())

    async def list_messages(self, request: Request) -> Response:
        query = request.query_params
        status = query.get("status")
        if status and status not in {s.value for s in MessageStatus}:
            raise AdminError(400, f"unknown status '{status}'")
        messages = [
            m.to_json()
            for m in self.connector.model.list_messages(query.get("activity_id") or None)
            if not status or m.status.value == status
        ]
        return JSONResponse({"messages": messages})

    async def get_message(self, request: Request) -> Response:
        message = self.connector.model.message(request.path_params["message_id"])
        if message is None:
            raise AdminError(404, f"no message '{request.path_params['message_id']}'")
        answer = message.to_json()
        answer["execution_detail"] = message.execution_detail
        return JSONResponse(answer)


def routes(state: Any) -> list[BaseRoute]:
    admin = _Admin(state)

    base = "/_emulator/connector"
    table: list[tuple[str, Handler, str]] = [
        (f"{base}/activities", admin.list_activities, "GET"),
        (f"{base}/activities", admin.post_activity, "POST"),
        (f"{base}/activities/{{activity_id}}", admin.get_activity, "GET"),
        (f"{base}/activities/{{activity_id}}", admin.patch_activity, "PATCH"),
        (f"{base}/activities/{{activity_id}}", admin.delete_activity, "DELETE"),
        (f"{base}/activities/{{activity_id}}/export", admin.export, "POST"),
        (f"{base}/settings", admin.get_settings, "GET"),
        (f"{base}/settings", admin.put_settings, "PUT"),
        (f"{base}/messages", admin.list_messages, "GET"),
        (f"{base}/messages/{{message_id}}", admin.get_message, "GET"),
    ]
    return admin_routes(table)
