"""The recurring-integrations model (ref §4): activities (recurring data jobs), the message journal and the
export queue with visibility timeouts and pop receipts. Pure state behind one lock; the HTTP routes
(routes.py), the admin API (admin.py) and the background worker (worker.py) act on it.

Choices where the reference is UNCONFIRMED are marked in comments; docs/emulator.md lists them.
"""

from __future__ import annotations

import base64
import math
import secrets
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from emulator.connector.settings import ConnectorSettings

EMPTY_GUID = "00000000-0000-0000-0000-000000000000"


class JobType(StrEnum):
    FILE = "File"  # single files in the entity's source format
    DATA_PACKAGE = "DataPackage"  # zip with Manifest.xml and PackageHeader.xml (ref §7)


class Direction(StrEnum):
    IMPORT = "import"
    EXPORT = "export"


class MessageStatus(StrEnum):
    """The ``GetMessageStatus`` values with the doc's spellings (ref §4.4; RIS spells some differently)."""

    ENQUEUED = "Enqueued"
    DEQUEUED = "Dequeued"
    ACKED = "Acked"
    PREPROCESSING = "Preprocessing"
    PROCESSING = "Processing"
    PROCESSED = "Processed"
    PREPROCESSING_ERROR = "PreProcessingError"
    PROCESSED_WITH_ERRORS = "ProcessedWithErrors"
    POSTPROCESSING_FAILED = "PostProcessingFailed"


IMPORT_TERMINAL = frozenset(
    {
        MessageStatus.PROCESSED,
        MessageStatus.PREPROCESSING_ERROR,
        MessageStatus.PROCESSED_WITH_ERRORS,
        MessageStatus.POSTPROCESSING_FAILED,
    }
)

# jobstatus reports the DataJobState enum (ref §4.3), by name (UNCONFIRMED: names or integers; RIS's
# StringEnumConverter reads both, and names are what a person reading the payload needs).
_DATA_JOB_STATE = {
    MessageStatus.ENQUEUED: "Enqueued",
    MessageStatus.DEQUEUED: "Dequeued",
    MessageStatus.ACKED: "Acked",
    MessageStatus.PREPROCESSING: "InProcess",
    MessageStatus.PROCESSING: "InProcess",
    MessageStatus.PROCESSED: "Processed",
    MessageStatus.PROCESSED_WITH_ERRORS: "ProcessedWithErrors",
    MessageStatus.POSTPROCESSING_FAILED: "PostProcessError",
    MessageStatus.PREPROCESSING_ERROR: "PreProcessError",
}


class ConnectorError(Exception):
    """A request the connector refuses: ``status`` is the HTTP status, ``message`` the reason."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def normalize_id(value: str) -> str:
    """Ids arrive as ``guid``, ``{guid}``, ``"guid"`` or in upper case: compare them bare."""
    return value.strip().strip('"').strip("{}").strip().lower()


def iso(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class Activity:
    """A recurring data job; its ID is the ``activityId`` of every connector URL (ref §4.1)."""

    activity_id: str
    name: str
    direction: Direction
    job_type: JobType
    data_project: str  # the definition group the job runs
    # DMF entity name. File imports: the job's entity (informational: each enqueue names its ?entity=).
    # Exports: the entity whose changes trigger one (None: every entity of the data project).
    entity: str | None = None
    legal_entity: str = "usmf"  # company when the enqueue names none; the exported company
    source_format: str | None = None  # File imports: the DMF source format of the files
    # The job's authorization policy: Entra application ids allowed to call it (ref §4.1, §8.2).
    # None = every app registered in F&O (an emulator convenience for jobs created without a policy).
    allowed_app_ids: tuple[str, ...] | None = None
    process_in_order: bool = False  # "Process messages in order" (File jobs only, ref §4.1)
    export_on_change: bool = False  # exports: queue a package when the entity's data changes

    def allows(self, app_id: str) -> bool:
        return self.allowed_app_ids is None or app_id.lower() in self.allowed_app_ids

    def to_json(self) -> dict[str, Any]:
        return {
            "activity_id": self.activity_id,
            "name": self.name,
            "direction": self.direction.value,
            "job_type": self.job_type.value,
            "data_project": self.data_project,
            "entity": self.entity,
            "legal_entity": self.legal_entity,
            "source_format": self.source_format,
            "allowed_app_ids": list(self.allowed_app_ids) if self.allowed_app_ids is not None else None,
            "process_in_order": self.process_in_order,
            "export_on_change": self.export_on_change,
        }


@dataclass
class Message:
    """One entry of the message journal: an enqueued import, or an export package waiting in the queue."""

    message_id: str  # the enqueue answer; for exports also the CorrelationId
    activity_id: str
    direction: Direction
    status: MessageStatus
    created_at: float
    content_path: Path | None = None
    size: int = 0
    external_identifier: str | None = None
    entity: str | None = None
    company: str | None = None
    execution_id: str | None = None
    started_at: float | None = None
    completed_at: float | None = None
    due_at: float = 0.0  # when the worker takes the next step of an import
    execution_log: str = ""
    execution_detail: list[dict[str, Any]] = field(default_factory=list)
    final_status: MessageStatus | None = None  # the outcome, shown once the Processing step is over
    pickup_order: int | None = None  # 1, 2, ...: the order in which the worker started messages
    # export queue
    blob_id: str | None = None
    pop_receipt: str | None = None
    dequeue_count: int = 0
    last_dequeued_at: float | None = None
    visible_at: float = 0.0
    downloaded_at: float | None = None
    acked_at: float | None = None

    @property
    def data_job_state(self) -> str:
        if self.status is MessageStatus.DEQUEUED and self.downloaded_at is not None:
            return "Downloaded"
        return _DATA_JOB_STATE[self.status]

    def to_json(self) -> dict[str, Any]:
        return {
            "message_id": self.message_id,
            "activity_id": self.activity_id,
            "direction": self.direction.value,
            "status": self.status.value,
            "data_job_state": self.data_job_state,
            "external_identifier": self.external_identifier,
            "entity": self.entity,
            "company": self.company,
            "size": self.size,
            "execution_id": self.execution_id,
            "created": iso(self.created_at),
            "started": iso(self.started_at),
            "pickup_order": self.pickup_order,
            "completed": iso(self.completed_at),
            "execution_log": self.execution_log,
            "blob_id": self.blob_id,
            "dequeue_count": self.dequeue_count,
            "last_dequeued": iso(self.last_dequeued_at),
            # rounded up: a client waiting until this moment finds the message visible
            "visible_at": iso(math.ceil(self.visible_at * 1000) / 1000)
            if self.direction is Direction.EXPORT
            else None,
            "downloaded": iso(self.downloaded_at),
            "acked": iso(self.acked_at),
        }


@dataclass(frozen=True)
class Dequeued:
    """What one dequeue hands out: the message and its ``LastDequeueDateTime`` (None the first time)."""

    message: Message
    pop_receipt: str
    previous_dequeue: float | None


def new_pop_receipt() -> str:
    """Opaque like Azure Queue receipts (e.g. ``AgAAAAMAAAAAAAAA3XpSEQ0b1QE=``, ref §4.2)."""
    return base64.b64encode(secrets.token_bytes(20)).decode("ascii")


class ConnectorModel:
    """Activities, journal and queue of one emulator; thread-safe (routes and the worker share it)."""

    def __init__(
        self,
        blob_dir: Path,
        *,
        seed: Callable[[], Iterable[Activity]] = tuple,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.blob_dir = Path(blob_dir)
        self.clock = clock
        self._seed = seed
        self.lock = threading.RLock()
        self.changed = threading.Condition(self.lock)  # the worker waits on it
        self.generation = 0  # bumped by reset: results of work started before it are dropped
        self.settings = ConnectorSettings()
        self.activities: dict[str, Activity] = {}
        self.messages: dict[str, Message] = {}
        self.export_due: dict[str, float] = {}  # export activity id -> when a change-triggered export runs
        self.pickups = 0
        self.reset()

    # --- lifecycle ------------------------------------------------------------------------------------

    def reset(self) -> None:
        with self.lock:
            self.generation += 1
            self.settings = ConnectorSettings()
            self.activities = {a.activity_id: a for a in self._seed()}
            self.messages = {}
            self.export_due = {}
            self.pickups = 0
            shutil.rmtree(self.blob_dir, ignore_errors=True)
            self.blob_dir.mkdir(parents=True, exist_ok=True)
            self.changed.notify_all()

    def notify(self) -> None:
        with self.lock:
            self.changed.notify_all()

    def update_settings(self, changes: dict[str, Any]) -> ConnectorSettings:
        with self.lock:
            trial = replace(self.settings)
            trial.update(changes)
            self.settings = trial
            self.changed.notify_all()
            return trial

    # --- activities -----------------------------------------------------------------------------------

    def activity(self, activity_id: str) -> Activity | None:
        return self.activities.get(normalize_id(activity_id))

    def put_activity(self, activity: Activity) -> Activity:
        with self.lock:
            self.activities[activity.activity_id] = activity
        return activity

    def remove_activity(self, activity_id: str) -> bool:
        with self.lock:
            key = normalize_id(activity_id)
            self.export_due.pop(key, None)
            return self.activities.pop(key, None) is not None

    # --- journal --------------------------------------------------------------------------------------

    def message(self, message_id: str) -> Message | None:
        return self.messages.get(normalize_id(message_id))

    def list_messages(self, activity_id: str | None = None) -> list[Message]:
        with self.lock:
            wanted = normalize_id(activity_id) if activity_id else None
            return [m for m in self.messages.values() if wanted is None or m.activity_id == wanted]

    def new_blob_path(self, suffix: str) -> Path:
        return self.blob_dir / f"{uuid.uuid4()}{suffix}"

    def add_import(
        self,
        activity: Activity,
        *,
        content_path: Path,
        size: int,
        entity: str | None,
        company: str | None,
        external_identifier: str | None,
    ) -> Message:
        with self.lock:
            now = self.clock()
            message = Message(
                message_id=str(uuid.uuid4()),
                activity_id=activity.activity_id,
                direction=Direction.IMPORT,
                status=MessageStatus.ENQUEUED,
                created_at=now,
                content_path=content_path,
                size=size,
                external_identifier=external_identifier,
                entity=entity,
                company=company,
                due_at=now + self.settings.pickup_delay_seconds,
            )
            self.messages[message.message_id] = message
            self.changed.notify_all()
            return message

    def add_export(self, activity: Activity, package: Path, *, execution_id: str | None) -> Message:
        """Queue an export package (moved into the connector's blob store) for dequeue."""
        blob_id = str(uuid.uuid4())
        target = self.blob_dir / f"{blob_id}.zip"
        shutil.move(package, target)
        with self.lock:
            now = self.clock()
            message = Message(
                message_id=str(uuid.uuid4()),
                activity_id=activity.activity_id,
                direction=Direction.EXPORT,
                status=MessageStatus.ENQUEUED,
                created_at=now,
                content_path=target,
                size=target.stat().st_size,
                entity=activity.entity,
                company=activity.legal_entity,
                execution_id=execution_id,
                started_at=now,
                completed_at=now,
                blob_id=blob_id,
                visible_at=now,
            )
            self.messages[message.message_id] = message
            return message

    # --- export queue ---------------------------------------------------------------------------------

    def dequeue(self, activity: Activity) -> Dequeued | None:
        """The oldest visible message: it becomes invisible for the visibility timeout, with a new receipt."""
        with self.lock:
            now = self.clock()
            for message in self.messages.values():
                if (
                    message.activity_id != activity.activity_id
                    or message.direction is not Direction.EXPORT
                    or message.status not in (MessageStatus.ENQUEUED, MessageStatus.DEQUEUED)
                    or message.visible_at > now
                ):
                    continue
                previous = message.last_dequeued_at
                message.pop_receipt = new_pop_receipt()
                message.dequeue_count += 1
                message.last_dequeued_at = now
                message.visible_at = now + self.settings.visibility_timeout_seconds
                message.status = MessageStatus.DEQUEUED
                return Dequeued(message, message.pop_receipt, previous)
            return None

    def export_message(self, activity: Activity, correlation_id: str) -> Message | None:
        message = self.message(correlation_id)
        if (
            message is None
            or message.activity_id != activity.activity_id
            or message.direction is not Direction.EXPORT
        ):
            return None
        return message

    def ack(self, activity: Activity, correlation_id: str, pop_receipt: str) -> Message:
        with self.lock:
            message = self.export_message(activity, correlation_id)
            if message is None:
                raise ConnectorError(
                    400, f"No message with CorrelationId '{correlation_id}' exists for this activity."
                )
            if message.status is MessageStatus.ACKED:
                # UNCONFIRMED: acknowledging an acknowledged message succeeds again (whatever the
                # receipt), so a client retrying an ack whose answer was lost is not told it failed.
                return message
            if message.status is not MessageStatus.DEQUEUED or pop_receipt != message.pop_receipt:
                # UNCONFIRMED status: a receipt that is not the latest (the message was dequeued again
                # after its visibility timeout) is refused with 400, like a queue's stale pop receipt.
                raise ConnectorError(
                    400,
                    f"The PopReceipt does not match the latest dequeue of message '{message.message_id}': "
                    "it was dequeued again after its visibility timeout, or never dequeued.",
                )
            message.status = MessageStatus.ACKED
            message.acked_at = self.clock()
            return message

    def mark_downloaded(self, message: Message) -> None:
        with self.lock:
            if message.downloaded_at is None:
                message.downloaded_at = self.clock()
