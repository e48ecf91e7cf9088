"""Business events of finished DMF executions, through the emulator's business events (ref §5).

D365 has no standard business event for DMF jobs; the catalog carries a widely used ISV one
(``NAVAXDMFImportStatusBusinessEvent`` / ``NAVAXDMFExportBusinessEvent``, shapes from captured samples). One
is raised per entity when an execution ends; it reaches a receiver only where it was activated.
"""

from __future__ import annotations

import logging
from typing import Any

from emulator.dmf.model import EntityExecution, Execution, iso, utc_now
from emulator.odata.store import FIRST_REC_ID

log = logging.getLogger(__name__)
IMPORT_EVENT = "NAVAXDMFImportStatusBusinessEvent"
EXPORT_EVENT = "NAVAXDMFExportBusinessEvent"
_STATUS_LABELS = {"PartiallySucceeded": "Partially succeeded", "NotRun": "Not run"}


def _raise(state: Any, event: str, company: str, fields: dict[str, Any]) -> None:
    events = getattr(state, "business_events", None)
    if events is None:
        return
    try:
        events.raise_event(event, company, fields)
    except Exception:  # an event is a side effect: it never fails the execution
        log.exception("could not raise %s", event)


def execution_finished(state: Any, execution: Execution, download_url: str | None = None) -> None:
    for number, item in enumerate(execution.entities):
        rec_id = FIRST_REC_ID + abs(hash((execution.id, number))) % 10_000_000
        if execution.kind == "import":
            _raise(state, IMPORT_EVENT, item.company, _import_fields(execution, item, rec_id))
        else:
            _raise(state, EXPORT_EVENT, item.company, {
                "DownloadURL": download_url or "", "EntityName": item.entity_name,
                "NoOfRecords": item.target_records, "OperationType": "Export",
                "ProjectCategory": "Integration", "RecId": rec_id,
            })  # fmt: skip


def _import_fields(execution: Execution, item: EntityExecution, rec_id: int) -> dict[str, Any]:
    status = str(execution.status)
    return {
        "EndDateTime": iso(item.completed_at or execution.completed_at or utc_now()),
        "EntityName": item.entity_name,
        "ExecutionId": execution.id,
        "FileName": item.file_name,
        "NoOfCreatedRecords": item.target_created,
        "NoOfRecords": item.staging_records + item.staging_errors,
        "NoOfUpdatedRecords": item.target_updated,
        "OperationType": "Import",
        "ProjectCategory": "Project",
        "RecId": rec_id,
        "StartedDateTime": iso(item.started_at or execution.started_at or execution.created_at),
        "Status": _STATUS_LABELS.get(status, status),
    }
