"""The export side of the overview: recent dequeued packages and DMF exports, by their status records.

Status records sit next to each package (``shared.pipelines.exports.layout``):
``{activity}/{yyyy}/{mm}/{dd}/{correlation-id}.zip.status.json`` and
``dmf/{definition-group}/{yyyy}/{mm}/{dd}/{execution-id}.zip.status.json``; only the configured
activities' and jobs' folders of the window's days are listed.
"""

from __future__ import annotations

from datetime import datetime

from shared.pipelines.exports.layout import safe_segment
from shared.pipelines.exports.settings import ExportSettings
from shared.pipelines.overview.imports import day_prefixes, failure_from_record
from shared.pipelines.overview.listing import Listed, Lister
from shared.pipelines.overview.model import ExportRow, Overview
from shared.status import STATUS_SUFFIX

__all__ = ["gather_exports"]

_FAILED = ("failed", "partially_succeeded", "rejected")


def _folders(settings: ExportSettings) -> list[tuple[str, str]]:
    folders = [(a.name, f"{a.name}/") for a in settings.activities]
    for job in settings.dmf_jobs:
        try:
            folders.append((job.name, f"dmf/{safe_segment(job.definition_group)}/"))
        except ValueError:
            continue  # a name the export pipeline refuses too: nothing stored under it
    return folders


def gather_exports(
    overview: Overview,
    lister: Lister,
    settings: ExportSettings,
    *,
    now: datetime,
    since: datetime,
    recent: int,
) -> None:
    """Fill ``overview.exports`` and the failed exports among ``failures``."""
    found: list[tuple[str, Listed]] = []
    for name, folder in _folders(settings):
        for day in day_prefixes(since, now):
            found += [
                (name, b) for b in lister.blobs(settings.container, f"{folder}{day}")
                if b.name.endswith(STATUS_SUFFIX) and b.last_modified >= since
            ]  # fmt: skip
    found.sort(key=lambda item: item[1].last_modified, reverse=True)
    for name, blob in found[:recent]:
        record = lister.read_json(blob.container, blob.name)
        if record is None:
            continue
        row = ExportRow(
            kind=str(record.get("kind") or "export"),
            name=name,
            subject=str(record.get("subject") or blob.path.removesuffix(STATUS_SUFFIX)),
            outcome=str(record.get("outcome") or ""),
            message=str(record.get("message") or ""),
            at=str(record.get("updated") or ""),
            record_path=blob.path,
        )
        overview.exports.append(row)
        if row.outcome in _FAILED:
            overview.failures.append(failure_from_record(record, blob.path, route=name))
