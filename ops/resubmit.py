"""``python -m ops resubmit``: list failed imports, and put one back through the normal intake.

The work is ``shared.pipelines.imports.resubmit.resubmit_import`` (safe to run twice: the second run
answers ``already_resubmitted``); this module selects the failure (a path, or route + file name), prints
the answer and, with ``--wait``, follows the re-submitted file to its new status record.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TextIO

from ops.common import load_settings, open_context
from ops.follow import follow_import
from ops.importing import OpsError, print_followed
from shared.context import AppContext
from shared.pipelines.imports.resubmit import (
    Failure,
    ResubmitError,
    ResubmitReport,
    find_failures,
    list_failures,
    resubmit_import,
)
from shared.pipelines.imports.routing import RoutingError, resolve
from shared.pipelines.imports.settings import ImportSettings

__all__ = ["ResubmitRequest", "resubmit"]

UNROUTED = "_unrouted"  # the errors folder of files no route served
MAX_PATH_CHARS = 1100  # a blob name: at most 1024 characters; the container and ".status.json" may come too


@dataclass(frozen=True)
class ResubmitRequest:
    path: str | None = None
    route: str | None = None
    file_name: str | None = None
    list_only: bool = False
    wait: bool = False
    timeout: float = 600.0
    as_json: bool = False


def _check_route(settings: ImportSettings, route: str) -> None:
    if route != UNROUTED and all(r.name != route for r in settings.routes):
        known = ", ".join([*(r.name for r in settings.routes), UNROUTED])
        raise OpsError(f"no import route named {route!r} in IMPORT_ROUTES (routes: {known})")


def check_path(path: str) -> None:
    """Refuse a PATH no failed import can have before storage sees it (storage would answer with a raw
    ``InvalidResourceName``): ``.``/``..`` or empty segments, backslashes, control characters, too long."""
    name = path.strip().lstrip("/")
    segments = name.split("/")
    problem = None
    if not name:
        problem = "it is empty"
    elif any(segment in ("", ".", "..") for segment in segments):
        problem = "it has an empty, '.' or '..' segment"
    elif "\\" in name or any(ord(c) < 32 or ord(c) == 127 for c in name):
        problem = "it has a backslash or a control character"
    elif len(name) > MAX_PATH_CHARS:
        problem = f"it is longer than {MAX_PATH_CHARS} characters"
    if problem:
        shown = " ".join(path.split())[:200]
        raise OpsError(f"{shown!r} is not the path of a failed import: {problem} (--list shows them)")


def _choose(failures: list[Failure], route: str, file_name: str) -> Failure:
    """The one failure to re-submit: the only one not re-submitted yet, else the latest re-submitted one
    (so a second run answers "already re-submitted")."""
    if not failures:
        raise OpsError(f"no failed import of {file_name!r} in route {route!r} (--list shows them)")
    waiting = [f for f in failures if f.resubmitted is None]
    if len(waiting) > 1:
        paths = ", ".join(f.path for f in waiting)
        raise OpsError(
            f"{len(waiting)} failed imports of {file_name!r} in route {route!r}; give one path: {paths}"
        )
    return waiting[0] if waiting else failures[-1]


def _list(context: AppContext, settings: ImportSettings, request: ResubmitRequest, out: TextIO) -> int:
    if request.route:
        _check_route(settings, request.route)
    failures = list(list_failures(context, route=request.route, settings=settings))
    if request.as_json:
        out.write(json.dumps([f.to_dict() for f in failures], indent=2) + "\n")
        return 0
    for failure in failures:
        done = failure.resubmitted
        note = f"re-submitted (attempt {done.get('attempt')}, {done.get('at')})" if done else "resubmittable"
        reason = f" [{failure.reason_code}]" if failure.reason_code else ""
        out.write(f"{failure.path}  {failure.outcome}{reason}  {failure.updated}  {note}\n")
        out.write(f"    {failure.message[:300]}\n")
    if not failures:
        out.write("no failed imports\n")
    return 0


def _print(out: TextIO, request: ResubmitRequest, report: ResubmitReport) -> None:
    if request.as_json and not request.wait:
        out.write(json.dumps(report.to_dict(), indent=2) + "\n")
    elif not request.as_json:
        out.write(f"{report.outcome}: {report.source}\n    {report.message}\n")
    out.flush()


def resubmit(settings_path: str | None, request: ResubmitRequest, out: TextIO, err: TextIO) -> int:
    context = open_context(load_settings(settings_path, [ImportSettings]))
    try:
        settings = context.settings.section(ImportSettings)
        if request.list_only:
            return _list(context, settings, request, out)
        path = request.path
        if path is None:
            assert request.route is not None
            assert request.file_name is not None
            _check_route(settings, request.route)
            failures = find_failures(context, request.route, request.file_name, settings=settings)
            path = _choose(failures, request.route, request.file_name).path
        check_path(path)
        try:
            report = resubmit_import(context, path, settings=settings)
        except ResubmitError as exc:
            raise OpsError(str(exc)) from None
        _print(out, request, report)
        if not request.wait:
            return 0
        if report.outcome == "already_resubmitted":
            err.write("already re-submitted: not followed again (see its new status record)\n")
            return 0
        try:
            match = resolve(settings.routes, report.inbound_name)
        except RoutingError as exc:  # checked by the pipeline; the routes would have to change meanwhile
            raise OpsError(exc.message) from None
        followed = follow_import(context, settings, match, report.inbound_name, sha256=None, log=err,
                                 timeout=request.timeout)  # fmt: skip
        return print_followed(out, request.as_json, followed, {"resubmitted": report.to_dict()})
    finally:
        context.close()
