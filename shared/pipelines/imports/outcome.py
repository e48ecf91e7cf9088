"""Where an input ends up: the status record beside it, its D365 error files, and the move itself.

Order matters for "nothing is lost": the status record (and any error file) is written first, then the input
is moved. A crash in between leaves the input where it was with its record already written; the retry
writes the same record again and completes the move. Moves are idempotent (an existing target is kept, a
missing source whose target exists counts as done). Keeping an existing target and deleting the source
loses nothing because every target name belongs to one drop (``drop-``/``dup-{drop id}`` folders) or to
one job, and a job id is one-to-one with (route, company, content, generation) (``layout.job_id``; the
intake refuses to reuse another drop's job record).
"""

from __future__ import annotations

import json
import logging
from contextlib import suppress
from dataclasses import dataclass
from datetime import datetime
from typing import IO, Any

from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.storage.blob import BlobLeaseClient, ContentSettings

from shared.pipelines.imports import layout
from shared.pipelines.imports.settings import ImportSettings
from shared.redact import redact_text
from shared.status import Outcome, StatusRecord, status_name
from shared.storage import JSON_CONTENT, BlobStore

__all__ = ["Location", "Outcomes", "import_record"]

log = logging.getLogger(__name__)
SUCCESS_OUTCOMES = (Outcome.SUCCEEDED, Outcome.DUPLICATE)


@dataclass(frozen=True)
class Location:
    container: str
    name: str

    def __str__(self) -> str:
        return f"{self.container}/{self.name}"


def import_record(
    subject: str, outcome: Outcome, message: str, correlation: dict[str, str] | None = None, **details: Any
) -> StatusRecord:
    """A status record of kind ``import`` (messages are redacted: no SAS signature ever lands in one)."""
    return StatusRecord(
        kind="import",
        subject=subject,
        outcome=outcome,
        message=redact_text(message),
        correlation={k: v for k, v in (correlation or {}).items() if v},
        details={k: v for k, v in details.items() if v is not None},
    )


class Outcomes:
    """Status records and moves into the archive and errors containers."""

    def __init__(self, store: BlobStore, settings: ImportSettings) -> None:
        self.store = store
        self.settings = settings

    def final_location(
        self, outcome: Outcome, route: str, when: datetime, folder: str, file_name: str
    ) -> Location:
        container = (
            self.settings.archive_container if outcome in SUCCESS_OUTCOMES else self.settings.errors_container
        )
        return Location(container, layout.final_name(route, when, folder, file_name))

    def write_record(self, location: Location, record: StatusRecord) -> None:
        body = json.dumps(record.to_dict(), indent=2, sort_keys=True, default=str).encode("utf-8")
        self.store.blob(location.container, status_name(location.name)).upload_blob(
            body, overwrite=True, content_settings=JSON_CONTENT
        )

    def delete_record(self, location: Location) -> None:
        with suppress(ResourceNotFoundError):
            self.store.blob(location.container, status_name(location.name)).delete_blob()

    def write_file(self, location: Location, data: bytes | IO[bytes], content_type: str) -> None:
        self.store.blob(location.container, location.name).upload_blob(
            data, overwrite=True, content_settings=ContentSettings(content_type=content_type)
        )

    def move(self, source: Location, target: Location, *, lease: BlobLeaseClient | None = None) -> None:
        """Copy ``source`` to ``target`` (streamed) and delete it; ``lease``: the one held on the source."""
        source_blob = self.store.blob(source.container, source.name)
        try:
            self.store.copy_stream(source_blob, target.container, target.name)
        except ResourceNotFoundError:
            if self.store.blob(target.container, target.name).exists():
                return  # an earlier attempt moved it already
            raise
        except ResourceExistsError:
            pass
        with suppress(ResourceNotFoundError):
            if lease is not None:
                source_blob.delete_blob(lease=lease)
            else:
                source_blob.delete_blob()

    def finish(
        self,
        source: Location,
        target: Location,
        record: StatusRecord,
        *,
        lease: BlobLeaseClient | None = None,
    ) -> None:
        """Record, then move: the input ends at ``target`` with ``{target}.status.json`` beside it."""
        record.details.setdefault("stored_as", str(target))
        self.write_record(target, record)
        self.move(source, target, lease=lease)
        log.info(
            "import %s: %s -> %s (%s)",
            record.correlation.get("job_id", "-"),
            source,
            target,
            record.outcome,
        )
