"""``python -m ops import`` and ``python -m ops enqueue``: a local file into the app or straight into D365.

``import`` streams the file into the inbound container at the route's folder (``{prefix}[{company}/]{file}``,
checked with the intake's own routing first), as staged blocks committed create-only: the blob appears,
and the blob trigger fires, only once it is complete, and a file of the same name still waiting there is
never overwritten. ``--wait`` then runs the intake and follows the file to its status record
(``ops/follow.py``). That path is exactly-once: the ledger decides, as for any drop.

``enqueue`` POSTs the file to ``/api/connector/enqueue/{activity}`` through ``ConnectorClient`` (the one
resilience policy) with a streaming body: the file is never read into memory. Like D365's enqueue itself it
is NOT idempotent: each run queues the file again. ``--wait`` polls ``jobstatus`` until D365 finished it.

Both draw a progress bar on stderr when it is a terminal (``--no-progress`` turns it off).
"""

from __future__ import annotations

import json
import mimetypes
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from ops.common import OpsError, load_settings, open_context
from ops.follow import Followed, follow_import
from ops.progress import Progress, ProgressReader, format_bytes
from shared.context import AppContext
from shared.d365.connector import ConnectorClient, DataJobState
from shared.d365.errors import D365Error
from shared.pipelines.exports.blob_writer import BlockBlobWriter
from shared.pipelines.imports.routing import InputKind, RouteMatch, RoutingError, resolve
from shared.pipelines.imports.settings import ImportSettings, Route

__all__ = ["EnqueueRequest", "ImportRequest", "OpsError", "enqueue_file", "import_file", "route_blob_name"]

CHUNK = 1024 * 1024


@dataclass(frozen=True)
class ImportRequest:
    file: str
    route: str
    legal_entity: str | None = None
    wait: bool = False
    timeout: float = 600.0
    progress: bool = True
    as_json: bool = False


@dataclass(frozen=True)
class EnqueueRequest:
    file: str
    activity: str
    entity: str | None = None
    company: str | None = None
    wait: bool = False
    timeout: float = 600.0
    progress: bool = True
    as_json: bool = False


def _route(settings: ImportSettings, name: str) -> Route:
    try:
        return settings.route(name)
    except KeyError:
        known = ", ".join(r.name for r in settings.routes) or "none configured"
        raise OpsError(f"no import route named {name!r} in IMPORT_ROUTES (routes: {known})") from None


def route_blob_name(
    settings: ImportSettings, route: Route, file_name: str, legal_entity: str | None
) -> tuple[str, RouteMatch]:
    """Where ``file_name`` goes in inbound for ``route`` (and ``legal_entity``), and how the intake will
    route it there; :class:`OpsError` when the intake would reject it."""
    company = (legal_entity or "").lower()
    folder = f"{company}/" if company and route.legal_entity_from == "folder" else ""
    name = f"{route.prefix}{folder}{file_name}"
    try:
        match = resolve(settings.routes, name)
    except RoutingError as exc:
        raise OpsError(exc.message) from None
    if match.route.name != route.name:
        raise OpsError(
            f"{name!r} would be routed by {match.route.name!r} (a longer prefix), not {route.name!r}"
        )
    if company and match.legal_entity != company:
        source = {"route": "the route's legal_entity", "file_name": "the file name"}.get(
            route.legal_entity_from, "the folder"
        )
        raise OpsError(
            f"route {route.name!r} takes the legal entity from {source}: this file would go to "
            f"{match.legal_entity or 'the default company'!r}, not {company!r}"
        )
    _check_entity(match)
    return name, match


def _check_entity(match: RouteMatch) -> None:
    """A data file needs an entity whose ``file_pattern`` matches it: the intake builds the package from
    that entry (a File job sending the file as is uses the route's ``entity``)."""
    route = match.route
    if match.kind != InputKind.RAW or (route.is_recurring and route.send_as == "file"):
        return
    if route.entity_for(match.file_name) is None:
        patterns = ", ".join(repr(e.file_pattern) for e in route.entities) or "none"
        raise OpsError(
            f"route {route.name!r} has no entity for {match.file_name!r} (file patterns: {patterns}); "
            "the intake would reject it"
        )


def _upload(
    context: AppContext, container: str, name: str, path: Path, show: bool, err: TextIO
) -> tuple[int, str]:
    """Stream ``path`` into ``container/name`` create-only; (bytes, sha256)."""
    size = path.stat().st_size
    blob = context.store.blob(container, name)
    content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    with (
        path.open("rb") as source,
        _bar(path, size, err, show) as progress,
        BlockBlobWriter(blob, content_type=content_type) as writer,
    ):
        while chunk := source.read(CHUNK):
            writer.write(chunk)
            progress.advance(len(chunk))
        if not writer.commit(metadata={"uploaded_by": "ops import", "sha256": writer.sha256}):
            raise OpsError(
                f"{container}/{name} already exists (a file of that name waits to be imported); "
                "wait until it was handled or rename the file"
            )
    return size, writer.sha256


def _bar(path: Path, size: int, err: TextIO, show: bool) -> Progress:
    """The progress bar: drawn when ``show`` and ``err`` is a terminal."""
    return Progress(path.name, size, err, enabled=None if show else False)


def import_file(settings_path: str | None, request: ImportRequest, out: TextIO, err: TextIO) -> int:
    path = Path(request.file)
    if not path.is_file():
        raise OpsError(f"{request.file}: no such file")
    context = open_context(load_settings(settings_path, [ImportSettings]))
    try:
        settings = context.settings.section(ImportSettings)
        route = _route(settings, request.route)
        name, match = route_blob_name(settings, route, path.name, request.legal_entity)
        inbound = settings.inbound_container
        size, sha256 = _upload(context, inbound, name, path, request.progress, err)
        uploaded = {"uploaded": f"{inbound}/{name}", "bytes": size, "sha256": sha256,
                    "route": match.route.name, "legal_entity": match.legal_entity}  # fmt: skip
        if not request.wait:
            _print(out, request.as_json, uploaded, f"uploaded {format_bytes(size)} to {inbound}/{name} "
                   f"(sha256 {sha256[:16]}…); the blob trigger or the import monitor imports it")  # fmt: skip
            return 0
        err.write(f"uploaded {format_bytes(size)} to {inbound}/{name}\n")
        followed = follow_import(
            context, settings, match, name, sha256=sha256, log=err, timeout=request.timeout
        )
        return print_followed(out, request.as_json, followed, uploaded)
    finally:
        context.close()


def print_followed(out: TextIO, as_json: bool, followed: Followed, about: dict[str, Any]) -> int:
    """The final status record: one JSON document, or a few readable lines; exit 0 when it succeeded."""
    record = followed.record
    if as_json:
        out.write(json.dumps({**about, "outcome": followed.outcome, "stored_as": followed.stored_as,
                              "job_id": followed.job_id, "status": record}, indent=2) + "\n")  # fmt: skip
    else:
        out.write(f"{followed.outcome}: {record.get('message', '')}\n")
        out.write(f"stored as {followed.stored_as} (status record {followed.stored_as}.status.json)\n")
        d365 = record.get("d365") or {}
        if d365.get("status"):
            out.write(f"D365 status {d365['status']}")
            out.write(f", {d365['error_count']} error(s)\n" if d365.get("error_count") else "\n")
    out.flush()
    return 0 if followed.ok else 1


def _print(out: TextIO, as_json: bool, document: dict[str, Any], line: str) -> None:
    out.write((json.dumps(document, indent=2) if as_json else line) + "\n")
    out.flush()


def enqueue_file(
    settings_path: str | None,
    request: EnqueueRequest,
    out: TextIO,
    err: TextIO,
    *,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    path = Path(request.file)
    if not path.is_file():
        raise OpsError(f"{request.file}: no such file")
    context = open_context(load_settings(settings_path))
    try:
        connector = ConnectorClient(context.transport)
        size = path.stat().st_size
        with (
            path.open("rb") as source,
            _bar(path, size, err, request.progress) as bar,
        ):
            message_id = connector.enqueue(
                request.activity,
                ProgressReader(source, bar),  # type: ignore[arg-type]  # a read/seek/tell file is enough
                entity=request.entity,
                company=request.company,
                external_id=path.name,
            )
        about = {"message_id": message_id, "activity": request.activity, "bytes": size, "file": str(path)}
        if not request.wait:
            _print(out, request.as_json, about, f"enqueued {format_bytes(size)} as message {message_id}")
            return 0
        err.write(f"enqueued {format_bytes(size)} as message {message_id}\n")
        state = _wait_for_job(connector, request, message_id, err, sleep)
        _print(out, request.as_json, {**about, "state": str(state)}, f"message {message_id}: {state}")
        return 0 if state.succeeded else 1
    finally:
        context.close()


def _wait_for_job(
    connector: ConnectorClient,
    request: EnqueueRequest,
    message_id: str,
    err: TextIO,
    sleep: Callable[[float], None],
) -> DataJobState:
    deadline = time.monotonic() + request.timeout
    last: DataJobState | None = None
    while True:
        try:
            state = connector.job_status(request.activity, message_id).state
        except D365Error as exc:
            err.write(f"jobstatus failed ({exc}); asking again\n")
            state = DataJobState.UNKNOWN
        if state != last:
            err.write(f"message {message_id}: {state}\n")
            err.flush()
            last = state
        if state.final:
            return state
        if time.monotonic() >= deadline:
            raise OpsError(
                f"message {message_id} is still {state} after {request.timeout:g} s; D365 goes on with it"
            )
        sleep(1.0)
