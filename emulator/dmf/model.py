"""The DMF executions journal: one ``Execution`` per job id with its state machine (ref §3.2, §3.5).

``NotRun -> Executing -> Succeeded | PartiallySucceeded | Failed | Canceled``; per entity the staging and
target steps carry the ``EntityExecutionState`` names of the recurring-integrations contract (ref §4.3).
Executions live in memory (an emulator restart forgets them, like a cleaned-up execution history).
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

EMPTY_GUID = "00000000-0000-0000-0000-000000000000"


class DmfError(Exception):
    """A request the DMF cannot serve; ``status`` 400 answers like ref §1.7's "Entity <x> does not exist"."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


class ExecutionStatus(StrEnum):
    """``DMFExecutionSummaryStatus`` (ref §3.2, meanings in [S23])."""

    UNKNOWN = "Unknown"
    NOT_RUN = "NotRun"
    EXECUTING = "Executing"
    SUCCEEDED = "Succeeded"
    PARTIALLY_SUCCEEDED = "PartiallySucceeded"
    FAILED = "Failed"
    CANCELED = "Canceled"

    @property
    def terminal(self) -> bool:
        return self in _TERMINAL


_TERMINAL = {
    ExecutionStatus.SUCCEEDED,
    ExecutionStatus.PARTIALLY_SUCCEEDED,
    ExecutionStatus.FAILED,
    ExecutionStatus.CANCELED,
}


class EntityExecutionState(StrEnum):
    """Per-entity staging / target state (ref §4.3 ``EntityExecutionState``)."""

    NOT_STARTED = "NotStarted"
    WAITING = "Waiting"
    EXECUTING = "Executing"
    ERROR = "Error"
    FINISHED = "Finished"
    NOT_RUN = "NotRun"
    CANCELED = "Canceled"


def utc_now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def iso(moment: datetime | None) -> str | None:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ") if moment else None


@dataclass
class ExecutionError:
    """One row of ``GetExecutionErrors`` (``RecordId``, ``Field``, ``ErrorMessage``, ref §3.2)."""

    entity_name: str
    record_id: str
    field: str
    message: str
    stage: str = "target"  # "package", "staging" (source -> staging) or "target" (staging -> target)

    def to_json(self) -> dict[str, str]:
        return {"RecordId": self.record_id, "Field": self.field, "ErrorMessage": self.message}


@dataclass
class EntityExecution:
    """One entity of an execution: counts, states, error files."""

    entity_name: str  # the DMF entity name as in the manifest ("Customers V3")
    set_name: str  # the OData set it lands in
    source_format: str
    company: str
    file_name: str = ""  # the data file in the package (InputFilePath)
    staging_records: int = 0
    staging_errors: int = 0
    staging_status: EntityExecutionState = EntityExecutionState.NOT_STARTED
    target_created: int = 0
    target_updated: int = 0
    target_errors: int = 0
    target_status: EntityExecutionState = EntityExecutionState.NOT_STARTED
    started_at: datetime | None = None
    completed_at: datetime | None = None
    staging_error_blob: str | None = None  # source -> staging error file (GetImportStagingErrorFileUrl)
    key_fields: tuple[str, ...] = ()  # staging names of the key, the header of the error-keys file
    error_keys: list[tuple[str, ...]] = field(default_factory=list)  # keys of rows that failed the target
    error_keys_blob: str | None = None
    error_keys_pending_polls: int | None = None  # None: not requested; >0: "" answers still to give

    @property
    def target_records(self) -> int:
        return self.target_created + self.target_updated

    def detail_json(self, execution: Execution) -> dict[str, Any]:
        """The ``ExecutionDetail`` item of the recurring-integrations job status (ref §4.3)."""
        return {
            "EntityName": self.entity_name,
            "Company": self.company,
            "StagingRecords": self.staging_records,
            "StagingStatus": str(self.staging_status),
            "StagingErrorCount": self.staging_errors,
            "TargetRecords": self.target_records,
            "TargetStatus": str(self.target_status),
            "TargetErrorCount": self.target_errors,
            "ExecutionStartedDateTime": iso(self.started_at or execution.started_at),
            "ExecutionCompletedDateTime": iso(self.completed_at),
        }


@dataclass
class Execution:
    """One DMF job ("Job ID" in the UI, ref §3.1)."""

    id: str
    kind: str  # "import" or "export"
    definition_group: str
    legal_entity: str
    source: str = "package-api"  # or "connector", "admin"
    message_id: str | None = None
    status: ExecutionStatus = ExecutionStatus.NOT_RUN
    created_at: datetime = field(default_factory=utc_now)
    started_at: datetime | None = None
    completed_at: datetime | None = None
    entities: list[EntityExecution] = field(default_factory=list)
    errors: list[ExecutionError] = field(default_factory=list)
    log_lines: list[str] = field(default_factory=list)
    package_blob: str | None = None  # import: the uploaded package; export: the built package
    package_name: str = ""  # export: the requested packageName
    export_path: Path | None = None
    status_polls: int = 0  # GetExecutionSummaryStatus calls seen (for the "not found" window)
    forced_status: ExecutionStatus | None = None  # set by the admin API: the status it ends with
    _done: threading.Event = field(default_factory=threading.Event, repr=False)
    _cancel: threading.Event = field(default_factory=threading.Event, repr=False)

    @property
    def cancel_requested(self) -> bool:
        return self._cancel.is_set()

    def request_cancel(self) -> None:
        self._cancel.set()

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the execution reached a final status; False on timeout."""
        return self._done.wait(timeout)

    @property
    def log(self) -> str:
        return "\n".join(self.log_lines)

    def note(self, line: str) -> None:
        self.log_lines.append(f"{iso(utc_now())} {line}")

    def entity(self, entity_name: str) -> EntityExecution | None:
        wanted = entity_name.strip().lower()
        for item in self.entities:
            if item.entity_name.lower() == wanted or item.set_name.lower() == wanted:
                return item
        return None

    def start(self) -> None:
        self.status = ExecutionStatus.EXECUTING
        self.started_at = self.started_at or utc_now()

    def finish(self, status: ExecutionStatus | None = None) -> None:
        """Final status: the given one, else derived from the rows (all failed / some failed / none)."""
        if status is None:
            status = self.outcome()
        self.status = status
        self.completed_at = utc_now()
        self.note(f"Execution ended: {status}")
        self._done.set()

    def outcome(self) -> ExecutionStatus:
        if self.forced_status is not None:
            return self.forced_status
        if self.cancel_requested:
            return ExecutionStatus.CANCELED
        if any(e.stage == "package" for e in self.errors):
            return ExecutionStatus.FAILED
        good = sum(
            e.target_records if e.target_status != EntityExecutionState.NOT_RUN else e.staging_records
            for e in self.entities
        )
        bad = sum(e.staging_errors + e.target_errors for e in self.entities)
        if bad == 0:
            return ExecutionStatus.SUCCEEDED
        return ExecutionStatus.PARTIALLY_SUCCEEDED if good else ExecutionStatus.FAILED

    def execution_detail(self) -> list[dict[str, Any]]:
        return [item.detail_json(self) for item in self.entities]

    def message_status(self) -> str:
        """The ref §4.4 message status an import in this state implies (doc spellings)."""
        if self.status in (ExecutionStatus.NOT_RUN, ExecutionStatus.EXECUTING):
            return "Processing"
        if self.status == ExecutionStatus.SUCCEEDED:
            return "Processed"
        if any(e.stage == "package" for e in self.errors):
            return "PreProcessingError"
        return "ProcessedWithErrors"

    def summary_json(self) -> dict[str, Any]:
        """What the admin API shows."""
        return {
            "execution_id": self.id,
            "kind": self.kind,
            "definition_group": self.definition_group,
            "legal_entity": self.legal_entity,
            "source": self.source,
            "message_id": self.message_id,
            "status": str(self.status),
            "created": iso(self.created_at),
            "started": iso(self.started_at),
            "completed": iso(self.completed_at),
            "package_blob": self.package_blob,
            "entities": [
                {
                    **item.detail_json(self),
                    "TargetRecordsCreatedCount": item.target_created,
                    "TargetRecordsUpdatedCount": item.target_updated,
                }
                for item in self.entities
            ],
            "errors": [{**e.to_json(), "EntityName": e.entity_name, "Stage": e.stage} for e in self.errors],
            "log": self.log_lines,
        }


class ExecutionJournal:
    """Every execution by id (case-insensitive, like F&O job ids); thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._by_id: dict[str, Execution] = {}

    @property
    def lock(self) -> threading.RLock:
        return self._lock

    def get(self, execution_id: str) -> Execution | None:
        with self._lock:
            return self._by_id.get(execution_id.strip().lower())

    def by_message(self, message_id: str) -> Execution | None:
        wanted = message_id.strip().strip('"{}').lower()
        with self._lock:
            for execution in reversed(self._by_id.values()):
                if execution.message_id and execution.message_id.strip('"{}').lower() == wanted:
                    return execution
        return None

    def add(self, execution: Execution, *, exclusive: Callable[[Execution], bool] | None = None) -> None:
        """Journal a new execution. ``exclusive``: refuse while a running execution matches it."""
        with self._lock:
            if execution.id.lower() in self._by_id:
                raise DmfError(
                    f"The execution ID '{execution.id}' is already used by another job. Use a new ID or "
                    "leave it empty to let the system create one."
                )
            if exclusive is not None:
                for other in self._by_id.values():
                    if not other.status.terminal and exclusive(other):
                        raise DmfError(
                            "ImportFromPackage uses a batch job and must not be called in parallel: the "
                            f"import '{other.id}' of data project '{other.definition_group}' is still "
                            f"{'queued' if other.status == ExecutionStatus.NOT_RUN else 'executing'}. "
                            "Wait until it ends before you import the next package.",
                            status=500,
                        )
            self._by_id[execution.id.lower()] = execution

    def remove(self, execution_id: str) -> Execution | None:
        with self._lock:
            return self._by_id.pop(execution_id.strip().lower(), None)

    def __iter__(self) -> Iterator[Execution]:
        with self._lock:
            return iter(list(self._by_id.values()))

    def clear(self) -> list[Execution]:
        with self._lock:
            gone = list(self._by_id.values())
            self._by_id.clear()
        return gone


def new_execution_id(definition_group: str) -> str:
    """What F&O makes when the caller leaves ``executionId`` empty (format UNCONFIRMED, ref §3.1)."""
    stamp = utc_now().strftime("%Y-%m-%d_%H-%M-%S")
    return f"{definition_group}-{stamp}-{str(uuid.uuid4()).upper()}"


@dataclass
class DmfSettings:
    """Run-time knobs (``PUT /_emulator/dmf/settings``); ``reset`` restores the start-up values."""

    step_delay_seconds: float = 1.0  # each queued / staging / target step takes this long (realistic pace)
    error_keys_polls: int = 2  # GetImportTargetErrorKeysFileUrl answers "" this often after Generate...
    status_not_found_polls: int = 0  # first N GetExecutionSummaryStatus calls answer 400 "...were not found"
    reject_parallel_imports: bool = True  # ref §3.1: a 2nd ImportFromPackage while one runs fails
    strict_error_json: bool = True  # False: GetExecutionErrors leaves quotes/line breaks unescaped (ref §3.2)
    sas_expiry_seconds: int = 3600  # lifetime of the SAS URLs handed out

    def update(self, changes: dict[str, Any]) -> None:
        for name, value in changes.items():
            if name not in type(self).__dataclass_fields__:
                raise ValueError(f"unknown DMF setting '{name}'")
            current = getattr(self, name)
            if isinstance(current, bool):
                if not isinstance(value, bool):
                    raise ValueError(f"'{name}' must be a boolean")
            elif isinstance(current, (int, float)):
                if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                    raise ValueError(f"'{name}' must be a non-negative number")
                value = type(current)(value)
            setattr(self, name, value)

    def to_json(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in type(self).__dataclass_fields__}


class DmfModel:
    """``state.dmf``: the journal, the settings, the blob container, the workers."""

    def __init__(self, state: Any, blobs: Any, settings: DmfSettings) -> None:
        from emulator.odata.service import ODataService

        self.state = state
        self.blobs = blobs  # emulator.dmf.blobs.DmfBlobs
        # imports write through the same sans-IO handler the /data routes use (validation, hooks)
        self.odata_service = getattr(state, "odata_service", None) or ODataService(state.odata)
        self.startup_settings = DmfSettings(**settings.to_json())
        self.settings = settings
        self.executions = ExecutionJournal()
        self.work_dir = Path(state.data_dir) / "dmf"
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self._threads: list[threading.Thread] = []

    def run_in_background(self, execution: Execution, work: Callable[[], None]) -> None:
        """Run one execution's work on its own thread (a DMF batch task)."""
        thread = threading.Thread(target=work, name=f"dmf-{execution.id}", daemon=True)
        self._threads = [t for t in self._threads if t.is_alive()]
        self._threads.append(thread)
        thread.start()

    def pause(self, execution: Execution, steps: float = 1.0) -> None:
        """Sleep ``steps`` step delays, waking early when the execution gets canceled."""
        delay = self.settings.step_delay_seconds * steps
        if delay > 0:
            execution._cancel.wait(delay)

    def force(self, execution: Execution, status: ExecutionStatus) -> None:
        """Admin: end an execution with ``status`` (a running one stops at its next step)."""
        if not status.terminal:
            raise ValueError(f"only a final status can be forced: {', '.join(sorted(_TERMINAL))}")
        execution.forced_status = status
        if execution.done:
            execution.status = status
            execution.note(f"Status forced to {status} (admin).")
        else:
            execution.request_cancel()

    def reset(self) -> None:
        """Admin reset: cancel what runs, forget every execution, start-up settings back."""
        for execution in self.executions.clear():
            execution.request_cancel()
        self.reset_settings()

    def reset_settings(self) -> None:
        self.settings = DmfSettings(**self.startup_settings.to_json())
