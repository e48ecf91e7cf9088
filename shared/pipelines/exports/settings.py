"""Settings of the export pipelines: which recurring-integration activities to dequeue, which DMF data
projects to export, where the results go, and the budgets that keep one run inside the function timeout.

App settings (all optional; an app without exports configures none of them):

- ``EXPORTS_CONTAINER`` (``exports``): container for the packages, unpacked files and manifest records.
- ``EXPORTS_STATE_CONTAINER`` (``state``): container for in-flight state records and the per-activity locks.
- ``EXPORT_ACTIVITIES``: JSON list of recurring export jobs, e.g.
  ``[{"name": "sales-orders", "activity_id": "<recurring data job ID>", "unpack": true, "manifest": true}]``.
  ``name`` is the folder under the container (letters, digits, ``.``, ``_``, ``-``); ``extension``
  (``zip``) is the stored file's extension (``csv``/``xml`` for a File-type job); ``unpack`` writes the
  package's files next to it, ``manifest`` a ``.manifest.json`` record (entities, rows, sizes, sha256).
- ``DMF_EXPORTS``: JSON list of package-API exports, e.g. ``[{"name": "customers", "definition_group":
  "Customer export", "legal_entity": "usmf", "package_name": "customers", "period_minutes": 1440,
  "offset_minutes": 120}]``: one export per period (default a day, starting ``offset_minutes`` after
  midnight UTC), re-attached to, not restarted, by every timer run in the same period.
- ``EXPORT_RUN_MAX_SECONDS`` (480): a timer run starts no new message or poll after this (host.json's
  ``functionTimeout`` is 10 minutes; the rest is headroom for the message in hand).
- ``EXPORT_RUN_MAX_MB`` (10240): a run dequeues no further message after downloading this many MiB.
- ``EXPORT_RUN_MAX_MESSAGES`` (500): a run dequeues at most this many messages.
- ``EXPORT_UNPACK_MAX_FILES`` (1000), ``EXPORT_UNPACK_MAX_FILE_MB`` (4096), ``EXPORT_UNPACK_MAX_TOTAL_MB``
  (16384): bounds on unpacking one package (entries, uncompressed MiB per entry and in total).
- ``EXPORT_DOWNLOAD_MAX_ATTEMPTS`` (10): failed downloads of one dequeued message (D365 re-offers an
  un-acked message every 30 minutes, so 10 is about 5 hours) before the pipeline gives up on it: a
  ``failed`` status record where its package would be, ``EXPORT_MESSAGE_GIVEN_UP`` in the log.
- ``EXPORT_GIVE_UP_ACK`` (``true``; or ``false``): whether a message given up on is acked. Acking ends
  D365's re-offers (D365 then shows it "Acked"); ``false`` leaves it with D365, offered every 30 minutes:
  each re-offer tries the download once more, quietly, and stores the package if it has become readable.
- ``DMF_EXPORT_POLL_SECONDS`` (15): pause between ``GetExecutionSummaryStatus`` / package URL reads.
- ``DMF_EXPORT_GIVE_UP_HOURS`` (24): an export still not finished (or not downloadable) after this is
  recorded as failed.

The timer schedules themselves (``EXPORT_DEQUEUE_SCHEDULE``, ``DMF_EXPORT_SCHEDULE``) are read by the
Functions host through ``%SETTING%`` expressions in ``blueprints/exports.py``, not here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Self

from shared.settings_reader import JsonFields, SettingsReader

__all__ = ["DmfExportJob", "ExportActivity", "ExportSettings", "MiB"]

MiB = 1024 * 1024
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
_ACTIVITY_ID = re.compile(r"^\{?[A-Za-z0-9-]{1,64}\}?$")
_EXTENSION = re.compile(r"^[a-z0-9]{1,10}$")
_ACTIVITY_KEYS = {"name", "activity_id", "unpack", "manifest", "extension"}
_DMF_KEYS = {"name", "definition_group", "legal_entity", "package_name", "period_minutes", "offset_minutes"}


@dataclass(frozen=True)
class ExportActivity:
    """One recurring export job (a recurring data job's ID is the connector's activity id, ref §4.1)."""

    name: str
    activity_id: str
    unpack: bool = False
    manifest: bool = False
    extension: str = "zip"

    @property
    def key(self) -> str:
        """The activity id as used in state and lock names (lower case, no braces)."""
        return self.activity_id.strip("{}").lower()


@dataclass(frozen=True)
class DmfExportJob:
    """One data project exported with ``ExportToPackage`` once per period."""

    name: str
    definition_group: str
    legal_entity: str = ""
    package_name: str = ""
    period_minutes: int = 1440
    offset_minutes: int = 0


@dataclass(frozen=True)
class ExportSettings:
    """The exports section (see the module docstring for every app setting)."""

    container: str = "exports"
    state_container: str = "state"
    activities: tuple[ExportActivity, ...] = ()
    dmf_jobs: tuple[DmfExportJob, ...] = ()
    run_max_seconds: float = 480.0
    run_max_bytes: int = 10240 * MiB
    run_max_messages: int = 500
    unpack_max_files: int = 1000
    unpack_max_file_bytes: int = 4096 * MiB
    unpack_max_total_bytes: int = 16384 * MiB
    dmf_poll_seconds: float = 15.0
    dmf_give_up_hours: float = 24.0
    download_max_attempts: int = 10
    give_up_ack: bool = True
    lease_seconds: int = field(default=60, repr=False)

    def activity(self, name: str) -> ExportActivity:
        for activity in self.activities:
            if activity.name == name:
                return activity
        raise KeyError(f"no export activity named {name!r} in EXPORT_ACTIVITIES")

    def dmf_job(self, name: str) -> DmfExportJob:
        for job in self.dmf_jobs:
            if job.name == name:
                return job
        raise KeyError(f"no DMF export named {name!r} in DMF_EXPORTS")

    @classmethod
    def from_reader(cls, reader: SettingsReader) -> Self:
        return cls(
            container=reader.container("EXPORTS_CONTAINER", "exports"),
            state_container=reader.container("EXPORTS_STATE_CONTAINER", "state"),
            activities=_activities(reader),
            dmf_jobs=_dmf_jobs(reader),
            run_max_seconds=reader.number("EXPORT_RUN_MAX_SECONDS", 480.0, above=True, maximum=86400),
            run_max_bytes=reader.integer("EXPORT_RUN_MAX_MB", 10240, minimum=1, maximum=10**7) * MiB,
            run_max_messages=reader.integer("EXPORT_RUN_MAX_MESSAGES", 500, minimum=1, maximum=100_000),
            unpack_max_files=reader.integer("EXPORT_UNPACK_MAX_FILES", 1000, minimum=1, maximum=100_000),
            unpack_max_file_bytes=reader.integer("EXPORT_UNPACK_MAX_FILE_MB", 4096, minimum=1, maximum=10**6)
            * MiB,
            unpack_max_total_bytes=reader.integer(
                "EXPORT_UNPACK_MAX_TOTAL_MB", 16384, minimum=1, maximum=10**7
            )
            * MiB,
            dmf_poll_seconds=reader.number("DMF_EXPORT_POLL_SECONDS", 15.0, maximum=3600),
            dmf_give_up_hours=reader.number("DMF_EXPORT_GIVE_UP_HOURS", 24.0, above=True, maximum=24 * 30),
            download_max_attempts=reader.integer(
                "EXPORT_DOWNLOAD_MAX_ATTEMPTS", 10, minimum=1, maximum=10_000
            ),
            give_up_ack=reader.choice("EXPORT_GIVE_UP_ACK", ("true", "false"), "true") == "true",
        )


class _Entries(JsonFields):
    """One object of a list setting, reported as ``NAME[i]``; adds the folder-safe ``name`` rule."""

    def __init__(self, reader: SettingsReader, setting: str, index: int, item: dict[str, Any]) -> None:
        super().__init__(reader, f"{setting}[{index}]", item)

    def name(self) -> str:
        value = self.text("name", required=True)
        if value and not _NAME.match(value):
            self.problem(
                f"name {value!r} must be 1-63 letters, digits, '.', '_' or '-' (it is a folder name)"
            )
        return value


def _activities(reader: SettingsReader) -> tuple[ExportActivity, ...]:
    found: list[ExportActivity] = []
    for index, item in enumerate(reader.json_objects("EXPORT_ACTIVITIES")):
        entry = _Entries(reader, "EXPORT_ACTIVITIES", index, item)
        entry.unknown(_ACTIVITY_KEYS)
        name = entry.name()
        activity_id = entry.text("activity_id", required=True)
        if activity_id and not _ACTIVITY_ID.match(activity_id):
            entry.problem(f"activity_id {activity_id!r} is not a recurring data job ID (a GUID)")
        extension = entry.text("extension", default="zip").lower().lstrip(".")
        if not _EXTENSION.match(extension):
            entry.problem(f"extension {extension!r} must be 1-10 letters or digits")
        activity = ExportActivity(name, activity_id, entry.flag("unpack"), entry.flag("manifest"), extension)
        if any(a.name == name for a in found):
            entry.problem(f"name {name!r} is used twice")
        if activity_id and any(a.key == activity.key for a in found):
            entry.problem(f"activity_id {activity_id!r} is configured twice (two jobs would compete)")
        found.append(activity)
    return tuple(found)


def _dmf_jobs(reader: SettingsReader) -> tuple[DmfExportJob, ...]:
    found: list[DmfExportJob] = []
    for index, item in enumerate(reader.json_objects("DMF_EXPORTS")):
        entry = _Entries(reader, "DMF_EXPORTS", index, item)
        entry.unknown(_DMF_KEYS)
        name = entry.name()
        period = entry.whole("period_minutes", 1440, 5, 31 * 1440)
        job = DmfExportJob(
            name=name,
            definition_group=entry.text("definition_group", required=True),
            legal_entity=entry.text("legal_entity"),
            package_name=entry.text("package_name") or name,
            period_minutes=period,
            offset_minutes=entry.whole("offset_minutes", 0, 0, max(0, period - 1)),
        )
        if any(j.name == name for j in found):
            entry.problem(f"name {name!r} is used twice")
        found.append(job)
    return tuple(found)
