"""One stored status record by its path (``container/name``), for the operations page's links.

The path comes from a URL, so it is checked strictly before anything is read: only status records in the
app's own containers are served —

- ``.status.json`` records in the imports' archive and errors containers, in the exports container, and
  beside in-flight inputs (``{import state}/inflight/...``);
- business-event processing records, ``{event state}/business-events/{EventId}.json``, and poison records
  (``{poison}/**.json``: the only record of a stored blob that was not a readable event).

No empty, ``.`` or ``..`` segment, no backslash, no control character, no other container or blob.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from shared.context import AppContext
from shared.events.layout import STATE_PREFIX
from shared.events.settings import BusinessEventSettings
from shared.pipelines.exports.settings import ExportSettings
from shared.pipelines.imports.settings import ImportSettings
from shared.pipelines.overview.listing import Lister, StorageUnavailableError
from shared.pipelines.overview.settings import OverviewSettings
from shared.redact import redact_text
from shared.settings import ConfigurationError
from shared.status import STATUS_SUFFIX

__all__ = ["RecordAnswer", "RecordPathError", "RecordRules", "check_record_path", "read_status_record"]

MAX_PATH = 1024
_FORBIDDEN = re.compile(r"[\x00-\x1f\x7f\\]")
_EVENT_RECORD = re.compile(r"^[A-Za-z0-9._-]{1,200}\.json$")


class RecordPathError(ValueError):
    """The path does not name a status record this app serves."""


@dataclass(frozen=True)
class RecordRules:
    """Which containers hold status records, and under which names."""

    status_containers: frozenset[str]  # any ``*.status.json`` in these
    inflight_container: str  # ``inflight/**/*.status.json``
    event_state_container: str  # ``business-events/{EventId}.json``
    poison_container: str = ""  # any ``*.json``

    @classmethod
    def from_context(cls, context: AppContext) -> RecordRules:
        imports = context.settings.section(ImportSettings)
        exports = context.settings.section(ExportSettings)
        events = context.settings.section(BusinessEventSettings)
        return cls(
            frozenset({imports.archive_container, imports.errors_container, exports.container}),
            imports.state_container,
            events.state_container,
            events.poison_container,
        )


def check_record_path(path: str, rules: RecordRules) -> tuple[str, str]:
    """``(container, name)`` of an allowed status record; RecordPathError otherwise."""
    if not path or len(path) > MAX_PATH or _FORBIDDEN.search(path):
        raise RecordPathError("not a status record path")
    segments = path.split("/")
    if len(segments) < 2 or any(s in ("", ".", "..") for s in segments):
        raise RecordPathError("not a status record path")
    container, name = segments[0], "/".join(segments[1:])
    if container in rules.status_containers and name.endswith(STATUS_SUFFIX):
        return container, name
    if (
        container == rules.inflight_container
        and name.startswith("inflight/")
        and name.endswith(STATUS_SUFFIX)
    ):
        return container, name
    if (
        container == rules.event_state_container
        and name.startswith(STATE_PREFIX)
        and _EVENT_RECORD.match(name[len(STATE_PREFIX) :])
    ):
        return container, name
    if rules.poison_container and container == rules.poison_container and name.endswith(".json"):
        return container, name
    raise RecordPathError("only status records of this app's containers are served")


@dataclass(frozen=True)
class RecordAnswer:
    status: int  # 200, 400 (bad path), 404 (no such record), 503 (invalid configuration)
    body: str  # pretty JSON: the record, or {"error": ...}


def _error(status: int, message: str) -> RecordAnswer:
    return RecordAnswer(status, json.dumps({"error": message}))


def read_status_record(context: AppContext, path: str) -> RecordAnswer:
    """The record at ``path`` as pretty JSON (redacted once more), after :func:`check_record_path`."""
    try:
        rules = RecordRules.from_context(context)
        bounds = context.settings.section(OverviewSettings)
    except ConfigurationError as exc:  # the containers are not known: nothing can be checked
        return _error(503, "invalid configuration: " + "; ".join(exc.problems))
    try:
        container, name = check_record_path(path.strip(), rules)
    except RecordPathError as exc:
        return _error(400, str(exc))
    try:
        lister = Lister(context.blob_service, 1, seconds=bounds.storage_seconds)
        record: dict[str, Any] | None = lister.read_json(container, name)
    except StorageUnavailableError as exc:
        return _error(503, str(exc))
    if record is None:
        return _error(404, "no such status record (it may have moved on: refresh the page)")
    return RecordAnswer(200, redact_text(json.dumps(record, indent=2, sort_keys=True, ensure_ascii=False)))
