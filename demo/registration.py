"""What the demo sets up in the emulator (its admin API), as an administrator sets up D365: the function app
as the business events endpoint with the import-status event activated for it, and any recurring data job or
data project the app's settings name but the emulator does not have yet (the sample settings name seeded
ones, so usually nothing is added).
"""

from __future__ import annotations

from typing import Any

from demo.target import Stack
from shared.events.settings import BusinessEventSettings
from shared.pipelines.exports.settings import ExportSettings
from shared.pipelines.imports.settings import ImportSettings

__all__ = [
    "ENDPOINT_NAME",
    "IMPORT_STATUS_EVENT",
    "register_event_endpoint",
    "register_jobs",
    "stop_duplicates",
]

ENDPOINT_NAME = "function-app"
#: Raised by D365 (here: the emulator's DMF engine) per entity when an import execution ends.
IMPORT_STATUS_EVENT = "NAVAXDMFImportStatusBusinessEvent"
#: Every event is delivered twice (same EventId and ControlNumber): the receiver must store it once.
DUPLICATES = {"duplicate_probability": 1, "duplicate_count": 1}
_EXPORT_PROJECT_ENTITIES = [
    {"entity": "Customer groups", "source_format": "CSV-Unicode", "level": 1},
    {"entity": "Customers V3", "source_format": "CSV-Unicode", "level": 2},
]


def _key(activity_id: str) -> str:
    return activity_id.strip("{}").lower()


def register_event_endpoint(stack: Stack, *, duplicates: bool = True) -> str:
    """The receiver function's URL (with its key) as an endpoint, the import-status event activated for
    all legal entities; returns the endpoint's id. Run again, it updates what is there."""
    settings = stack.settings.section(BusinessEventSettings)
    key = stack.target.functions.key_for("business_events_receive")
    headers = {}
    if settings.shared_secret is not None:  # the receiver also wants its shared-secret header
        headers[settings.secret_header] = settings.shared_secret.reveal()
    body: dict[str, Any] = {
        "name": ENDPOINT_NAME,
        "url": f"{stack.function_url('business_events_receive')}?code={key}",
        "headers": headers,
        "faults": DUPLICATES if duplicates else None,
    }
    known = stack.admin("GET", "business-events/endpoints")["endpoints"]
    if any(e["name"] == ENDPOINT_NAME for e in known):
        stack.admin("PATCH", f"business-events/endpoints/{ENDPOINT_NAME}", json=body)
    else:
        stack.admin("POST", "business-events/endpoints", json=body)
    endpoint_id = stack.admin("GET", f"business-events/endpoints/{ENDPOINT_NAME}")["id"]
    active = stack.admin("GET", "business-events/activations", params={"event": IMPORT_STATUS_EVENT})
    if not any(a.get("endpoint") == endpoint_id for a in active["activations"]):
        activation = {"event": IMPORT_STATUS_EVENT, "legal_entity": None, "endpoint": ENDPOINT_NAME}
        stack.admin("POST", "business-events/activations", json=activation)
    return str(endpoint_id)


def stop_duplicates(stack: Stack) -> None:
    """After the demo the endpoint delivers each event once again (as D365 does, mostly)."""
    stack.admin("PATCH", f"business-events/endpoints/{ENDPOINT_NAME}", json={"faults": None})


def register_jobs(stack: Stack) -> list[str]:
    """Recurring data jobs and export projects the settings name and the emulator lacks; what was added."""
    added: list[str] = []
    activities = {_key(a["activity_id"]) for a in stack.admin("GET", "connector/activities")["activities"]}
    projects = {p["definition_group"].lower() for p in stack.admin("GET", "dmf/projects")["projects"]}
    exports = stack.settings.section(ExportSettings)
    for job in exports.dmf_jobs:
        if job.definition_group.lower() not in projects:
            project: dict[str, Any] = {"operation": "Export", "entities": _EXPORT_PROJECT_ENTITIES}
            stack.admin("PUT", f"dmf/projects/{job.definition_group}", json=project)
            projects.add(job.definition_group.lower())
            added.append(f"data project {job.definition_group!r} (export)")
    for activity in exports.activities:
        if activity.key not in activities:
            source = exports.dmf_jobs[0].definition_group if exports.dmf_jobs else "Customers-Export"
            job_body = {"activity_id": activity.key, "name": f"Export {activity.name}", "direction": "export",
                        "job_type": "DataPackage", "data_project": source}  # fmt: skip
            stack.admin("POST", "connector/activities", json=job_body)
            activities.add(activity.key)
            added.append(f"recurring export job {activity.name} ({activity.key})")
    for route in stack.settings.section(ImportSettings).routes:
        if route.is_recurring and _key(route.activity_id) not in activities:
            body: dict[str, Any] = {
                "activity_id": _key(route.activity_id), "name": f"Import {route.name}", "direction": "import",
                "job_type": "File" if route.send_as == "file" else "DataPackage",
                "data_project": f"{route.name} recurring import", "entity": route.entity or None,
            }  # fmt: skip
            stack.admin("POST", "connector/activities", json=body)
            activities.add(_key(route.activity_id))
            added.append(f"recurring import job {route.name} ({_key(route.activity_id)})")
    return added
