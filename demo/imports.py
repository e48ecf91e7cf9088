"""Import flows: a file dropped into the inbound container, picked up by the app's blob trigger, sent to
D365, finished by the import-monitor timer (run now through the runner's host endpoint, as the Functions host
allows), and found in the archive or errors container beside its status record.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection
from typing import Any

from demo.inputs import DemoFile
from demo.report import FlowResult
from demo.target import FlowFailed, Stack, eventually
from shared.pipelines.imports import layout
from shared.pipelines.imports.routing import RoutingError, resolve
from shared.pipelines.imports.settings import ImportSettings
from shared.status import STATUS_SUFFIX, Outcome

__all__ = ["final_record", "import_flow", "import_problems", "progress"]

MONITOR = "import_monitor"
MONITOR_EVERY = 3.0  # seconds between manual monitor runs while a flow waits
#: The D365 error files a partial import keeps (docs/demo.md): a part of the file name -> what it is.
ERROR_FILES = {
    "execution-errors.json": "D365's execution errors (execution-errors.json)",
    ".target-error-keys.": "the target error-keys file",
    ".staging-errors.": "the staging error file",
}


def final_record(
    stack: Stack, settings: ImportSettings, item: DemoFile, *, monitor: bool = True
) -> tuple[str, str, dict[str, Any]] | None:
    """(container, blob, status record) once the input rests in archive or errors with a final record;
    ``monitor``: run the import monitor now and then (DMF routes; record-by-record routes finish without)."""
    if monitor:
        stack.nudge(MONITOR, MONITOR_EVERY)
    suffix = f"/{item.file_name}{STATUS_SUFFIX}"
    for container in (settings.archive_container, settings.errors_container):
        for day in stack.days():
            for name in stack.names(container, f"{item.route.name}/{day:%Y/%m/%d}/"):
                if not name.endswith(suffix):
                    continue
                record = stack.read_json(container, name)
                stored = name.removesuffix(STATUS_SUFFIX)
                if record and Outcome(record["outcome"]).final and stack.exists(container, stored):
                    return container, stored, record
    return None


def progress(stack: Stack, settings: ImportSettings, item: DemoFile) -> str:
    """Where a file that did not finish in time stands, for the FAIL line."""
    try:
        legal_entity = resolve(settings.routes, item.name).legal_entity
    except RoutingError:
        legal_entity = item.route.legal_entity.lower()
    job = layout.job_id(item.route.name, hashlib.sha256(item.data).hexdigest(), legal_entity=legal_entity)
    record = stack.read_json(settings.state_container, layout.job_name(job))
    if record is not None:
        return f"sent to D365 as job {job}, last D365 status {record.get('last_status') or 'not polled yet'}"
    if stack.exists(settings.inbound_container, item.name):
        return (
            "still in the inbound container: not sent (a file D365 cannot take now is left there and tried "
            "again by the import monitor; the function logs say why)"
        )
    return "gone from the inbound container but not in archive or errors yet"


def _how_sent(record: dict[str, Any], item: DemoFile) -> str:
    correlation = record.get("correlation", {})
    if item.route.is_recurring:
        return f"recurring job {item.route.activity_id} (message {correlation.get('message_id', '?')})"
    return f"ImportFromPackage into {item.route.definition_group!r}"


def import_problems(
    record: dict[str, Any],
    container: str,
    *,
    expect: Outcome,
    settings: ImportSettings,
    stored_files: Collection[str],
) -> list[str]:
    """What differs from docs/demo.md's "passes when" for an input that rests in ``container`` beside
    ``record``: the outcome ``expect``, in archive when it succeeded and in errors otherwise, and for a
    partial import D365's messages and its three error files, each stored (``stored_files``: those of the
    record's ``d365.error_files`` that exist)."""
    outcome = Outcome(record["outcome"])
    if outcome is not expect:
        return [f"expected {expect}, got {outcome}: {record.get('message', '')}"]
    problems: list[str] = []
    wanted = settings.archive_container if expect is Outcome.SUCCEEDED else settings.errors_container
    if container != wanted:
        problems.append(f"it rests in {container}, not in {wanted}")
    if outcome is Outcome.PARTIALLY_SUCCEEDED:
        d365 = record.get("d365", {})
        files = [str(f) for f in d365.get("error_files") or []]
        if not d365.get("errors"):
            problems.append("D365's error messages are missing from the status record")
        for part, what in ERROR_FILES.items():
            if not any(part in f.rsplit("/", 1)[-1] for f in files):
                problems.append(f"{what} is missing from the status record")
        missing = [f for f in files if f not in stored_files]
        if missing:
            problems.append(f"listed in the status record but not stored: {', '.join(missing)}")
    return problems


def import_flow(stack: Stack, title: str, item: DemoFile, *, expect: Outcome, timeout: float) -> FlowResult:
    """Drop ``item`` and wait (at most ``timeout`` s) until it ends with a final status record; passes
    when it ends as :func:`import_problems` wants."""
    settings = stack.settings.section(ImportSettings)
    inbound = settings.inbound_container
    stack.store.blob(inbound, item.name).upload_blob(item.data, overwrite=True)
    dropped = f"{inbound}/{item.name}"
    try:
        container, stored, record = eventually(
            stack,
            lambda: final_record(stack, settings, item),
            timeout=timeout,
            what=f"{dropped} archived or failed",
        )
    except FlowFailed as exc:
        if stack.stop.is_set():  # Ctrl-C under make run: where the file stands is not news
            raise
        raise FlowFailed(f"{exc}; {progress(stack, settings, item)}") from None
    d365 = record.get("d365", {})
    execution = record.get("correlation", {}).get("execution_id") or d365.get("execution_id")
    error_files = [str(f) for f in d365.get("error_files", [])]
    where = [f"{container}/{stored}  (+ {STATUS_SUFFIX})"]
    where += [f"{f}  (D365 error file)" for f in error_files]
    facts: dict[str, object] = {"execution_id": execution}
    reached = d365.get("status") or execution or record.get("correlation", {}).get("message_id")
    sent = f"{_how_sent(record, item)} -> D365 {d365.get('status', '?')}" if reached else "not sent to D365"
    headline = f"{dropped} -> {sent} -> {container}"
    present = {f for f in error_files if stack.exists(*f.split("/", 1))}
    problems = import_problems(record, container, expect=expect, settings=settings, stored_files=present)
    if problems:
        headline += ": " + "; ".join(problems)
    elif Outcome(record["outcome"]) is Outcome.PARTIALLY_SUCCEEDED:
        errors = d365["errors"]
        first = " ".join(str(errors[0].get("message", "")).split()).split(". ")[0][:120]
        headline += f" with D365's detail: {d365.get('error_count', len(errors))} error(s), e.g. {first!r}"
    if execution:
        where.append(f"D365 execution {execution}")
    return FlowResult(title, not problems, headline, where, facts=facts)
