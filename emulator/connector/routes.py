"""HTTP face of the recurring-integrations API, ``/api/connector/...`` (ref §4.2).

The D365 gate has already validated the bearer token (the connector is exempt from service protection
limits, ref §2.5); each route then checks the recurring data job's authorization policy. Errors use the
D365 error envelope (ref §1.7; UNCONFIRMED for this API).

``DownloadLocation``: D365 behind its load balancer answers ``http://`` URLs (ref §4.2). The emulator does the
same: ``http://`` + the Host the dequeue came to. Over the plain-HTTP port that is simply right; over the
HTTPS port (the same app answers there) the location says ``http://`` for a TLS port, and only a client
that puts its environment URL's scheme back can download, as against the real service.
``download_base_url`` (admin settings) replaces scheme and host outright (e.g. ``http://d365.invalid:80``)
for clients that rebase the location onto their configured environment URL.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from starlette.requests import ClientDisconnect, Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Route

from emulator.connector.model import (
    Activity,
    ConnectorError,
    Direction,
    JobType,
    Message,
    iso,
    normalize_id,
)
from emulator.middleware import odata_error
from emulator.odata.catalog import EMPTY_DATETIME

if TYPE_CHECKING:
    from emulator.connector.service import Connector

__all__ = ["routes"]

EXTERNAL_ID_HEADER = "x-ms-dyn-externalidentifier"
_WRITE_BUFFER = 1 << 20


def _error(status: int, message: str, inner: str | None = None) -> Response:
    return Response(odata_error(message, inner), status_code=status, media_type="application/json")


def routes(state: Any) -> list[BaseRoute]:
    """``state.connector`` (emulator.connector.Connector) and ``state.config.base_url`` are used."""
    api = _ConnectorApi(state)
    base = "/api/connector"
    table = [
        (f"{base}/enqueue/{{activity_id}}", api.enqueue, "POST"),
        (f"{base}/dequeue/{{activity_id}}", api.dequeue, "GET"),
        (f"{base}/download/{{activity_id}}", api.download, "GET"),
        (f"{base}/ack/{{activity_id}}", api.ack, "POST"),
        (f"{base}/jobstatus/{{activity_id}}", api.jobstatus, "GET"),
    ]
    return [Route(path, api.guarded(handler), methods=[method]) for path, handler, method in table]


class _ConnectorApi:
    def __init__(self, state: Any) -> None:
        self.state = state

    @property
    def connector(self) -> Connector:
        connector: Connector = self.state.connector
        return connector

    def guarded(self, handler: Any) -> Any:
        """Find the activity, apply its authorization policy, turn ConnectorError into an answer."""

        async def endpoint(request: Request) -> Response:
            try:
                activity = self._activity(request)
                response: Response = await handler(request, activity)
            except ConnectorError as exc:
                return _error(exc.status, exc.message)
            return response

        return endpoint

    def _activity(self, request: Request) -> Activity:
        raw = request.path_params["activity_id"]
        activity = self.connector.model.activity(raw)
        if activity is None:
            # UNCONFIRMED: D365's answer for an unknown activity id; 404 with the error envelope.
            raise ConnectorError(404, f"No recurring data job with ID '{normalize_id(raw)}' exists.")
        principal = getattr(request.state, "principal", None)
        app_id = str(getattr(principal, "app_id", ""))
        if not activity.allows(app_id):
            # UNCONFIRMED: a caller missing from the job's authorization policy (ref §4.1) gets 401 like
            # the other authorization failures of the D365 API surface (ref §8.1), not 403.
            return_reason = (
                f"The application '{app_id}' is not in the authorization policy of the recurring data "
                f"job '{activity.name}' ({activity.activity_id})."
            )
            raise ConnectorError(401, "Authorization has been denied for this request. " + return_reason)
        return activity

    # --- enqueue ----------------------------------------------------------------------------------

    async def enqueue(self, request: Request, activity: Activity) -> Response:
        """Stream the body to the connector's blob store and journal the message (ref §4.2)."""
        if activity.direction is not Direction.IMPORT:
            raise ConnectorError(400, f"The recurring data job '{activity.name}' is an export job.")
        query = request.query_params
        entity = (query.get("entity") or "").strip() or None
        if activity.job_type is JobType.FILE and entity is None:
            raise ConnectorError(
                400, "The 'entity' query parameter is required for a recurring data job of type File."
            )
        if activity.job_type is JobType.DATA_PACKAGE:
            entity = None  # packages name their entities in the manifest
        company = (query.get("company") or "").strip().lower() or None
        limit = self.connector.model.settings.max_enqueue_bytes
        declared = request.headers.get("content-length")
        if limit and declared and declared.isdigit() and int(declared) > limit:
            return _too_large(limit)
        path = self.connector.model.new_blob_path(".bin")
        size = await _receive_to_file(request, path, limit)
        if size is None:
            return _too_large(limit)
        message = self.connector.model.add_import(
            activity,
            content_path=path,
            size=size,
            entity=entity,
            company=company,
            external_identifier=request.headers.get(EXTERNAL_ID_HEADER),
        )
        self.connector.ensure_running()
        # ref §4.2: the message id as a JSON string literal with its quotes (UNCONFIRMED vs {"value":...})
        return Response(json.dumps(message.message_id), media_type="application/json")

    # --- dequeue / download / ack -------------------------------------------------------------------

    async def dequeue(self, request: Request, activity: Activity) -> Response:
        handed = self.connector.model.dequeue(activity)
        if handed is None:
            return Response(status_code=204)
        message = handed.message
        return JSONResponse(
            {
                "CorrelationId": message.message_id,
                "PopReceipt": handed.pop_receipt,
                "DownloadLocation": self._download_location(request, activity, message),
                "IsDownLoadFileExist": bool(message.content_path and message.content_path.exists()),
                "FileDownLoadErrorMessage": "",
                # UNCONFIRMED name (ref §4.2): null on the first dequeue, then the previous dequeue's time
                "LastDequeueDateTime": iso(handed.previous_dequeue),
            }
        )

    def _download_location(self, request: Request, activity: Activity, message: Message) -> str:
        host = request.headers.get("host")
        base = self.connector.model.settings.download_base_url or (
            f"http://{host}" if host else str(self.state.config.base_url)
        )
        return (
            f"{base}/api/connector/download/%7B{activity.activity_id}%7D"
            f"?correlation-id={message.message_id}&blob={message.blob_id}"
        )

    async def download(self, request: Request, activity: Activity) -> Response:
        correlation_id = request.query_params.get("correlation-id") or ""
        blob = normalize_id(request.query_params.get("blob") or "")
        message = self.connector.model.export_message(activity, correlation_id) if correlation_id else None
        path = message.content_path if message is not None and message.blob_id == blob else None
        if message is None or path is None or not path.exists():
            raise ConnectorError(404, "The requested file does not exist.")
        self.connector.model.mark_downloaded(message)
        return FileResponse(
            path,
            media_type="application/zip",
            filename=f"{message.blob_id}.zip",
            stat_result=os.stat(path),
        )

    async def ack(self, request: Request, activity: Activity) -> Response:
        """Body: the dequeue answer, verbatim or just CorrelationId/PopReceipt/DownloadLocation (ref §4.2)."""
        try:
            body = json.loads(await request.body() or b"null")
        except ValueError as exc:
            raise ConnectorError(400, f"The acknowledgement is not valid JSON: {exc}.") from None
        if not isinstance(body, dict):
            raise ConnectorError(400, "The acknowledgement must be the JSON object the dequeue answered.")
        correlation_id, pop_receipt = body.get("CorrelationId"), body.get("PopReceipt")
        if not isinstance(correlation_id, str) or not isinstance(pop_receipt, str) or not pop_receipt:
            raise ConnectorError(
                400, "The acknowledgement needs the CorrelationId and PopReceipt of a dequeue."
            )
        self.connector.model.ack(activity, correlation_id, pop_receipt)
        return Response(status_code=200)  # UNCONFIRMED body (ref §4.2): none

    # --- job status --------------------------------------------------------------------------------

    async def jobstatus(self, request: Request, activity: Activity) -> Response:
        job_id = request.query_params.get("jobId") or ""
        message = self.connector.model.message(job_id) if job_id.strip('"{} ') else None
        if message is None or message.activity_id != activity.activity_id:
            # UNCONFIRMED: an unknown job id answers 404
            raise ConnectorError(404, f"No message with ID '{normalize_id(job_id)}' exists for this job.")
        return JSONResponse(job_status(activity, message))


def job_status(activity: Activity, message: Message) -> dict[str, Any]:
    """``DataJobStatusDetail`` (ref §4.3). Dates not reached yet carry F&O's empty date (UNCONFIRMED: the
    contract's DateTime fields are not nullable)."""
    return {
        "DataJobStatus": {
            "DataProject": activity.data_project,
            "DataJobIdentifier": message.message_id,
            "ExternalIdentifier": message.external_identifier or "",
            "ExecutionIdentifier": message.execution_id or "",
            "DataJobStartedDateTime": iso(message.started_at) or EMPTY_DATETIME,
            "DataJobCompletedDateTime": iso(message.completed_at) or EMPTY_DATETIME,
            "DataJobState": message.data_job_state,
        },
        "ExecutionLog": message.execution_log,
        "ExecutionDetail": message.execution_detail,
    }


def _too_large(limit: int) -> Response:
    # UNCONFIRMED body: IIS request filtering's 413 (RIS #135 logs "Reason: Request Entity Too Large").
    return _error(
        413,
        "Request Entity Too Large",
        f"The request body is larger than the {limit} bytes this environment accepts for an enqueue.",
    )


async def _receive_to_file(request: Request, path: Path, limit: int) -> int | None:
    """Write the body to ``path`` as it arrives; None (and no file) when it exceeds ``limit``."""
    size = 0
    try:
        with path.open("wb", buffering=_WRITE_BUFFER) as sink:
            async for chunk in request.stream():
                size += len(chunk)
                if limit and size > limit:
                    break
                sink.write(chunk)
    except ClientDisconnect:
        path.unlink(missing_ok=True)
        raise
    if limit and size > limit:
        with contextlib.suppress(OSError):
            path.unlink()
        return None
    return size
