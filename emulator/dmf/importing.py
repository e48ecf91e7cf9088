"""The background work of one import: source -> staging -> target per entity, then the final status.

Each step lasts ``settings.step_delay_seconds`` (queued in ``NotRun``, then staging and target per entity in
``Executing``). A cancellation (admin, reset) stops the work before the next step or row.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from emulator.dmf import definitions, errorfiles, events
from emulator.dmf.datafiles import read_data_file
from emulator.dmf.definitions import DefinitionGroup, DmfEntity
from emulator.dmf.model import (
    EntityExecution,
    EntityExecutionState,
    Execution,
    ExecutionError,
    ExecutionStatus,
    utc_now,
)
from emulator.dmf.packages import ManifestEntity, Package, PackageError
from emulator.dmf.staging import ColumnMap, automatic_columns, stage_rows
from emulator.dmf.target import TargetWriter, error_message

log = logging.getLogger(__name__)


@dataclass
class PlannedEntity:
    source: ManifestEntity
    entity: DmfEntity
    source_format: str
    columns: list[ColumnMap] | None  # None: map the file's columns by name (recurring file jobs)


@dataclass
class ImportPlan:
    group: str
    description: str
    items: list[PlannedEntity]
    spool: Path  # the package zip, or the single data file
    single_file: bool = False
    owns_spool: bool = True
    save_group: DefinitionGroup | None = None  # create / replace the data project when launched
    notes: list[str] = field(default_factory=list)


def run_import(state: Any, execution: Execution, plan: ImportPlan, execute: bool) -> None:
    dmf = state.dmf
    try:
        dmf.pause(execution)  # waiting for the batch job: NotRun
        if not execution.cancel_requested:
            execution.start()
            execution.note("Execution started.")
            _mirror(state, execution)
            package = None if plan.single_file else Package(plan.spool)
            try:
                for item, progress in zip(plan.items, execution.entities, strict=True):
                    if execution.cancel_requested:
                        break
                    data = plan.spool.read_bytes() if package is None else None
                    _import_entity(state, execution, item, progress, package, data, execute)
                    _mirror(state, execution)
            finally:
                if package is not None:
                    package.close()
        execution.finish()
    except Exception as exc:  # an emulator bug must still end the execution
        log.exception("DMF import %s failed", execution.id)
        execution.errors.append(ExecutionError("", "", "", f"{type(exc).__name__}: {exc}", stage="package"))
        execution.finish(ExecutionStatus.FAILED)
    finally:
        if plan.owns_spool:
            plan.spool.unlink(missing_ok=True)
        _mirror(state, execution)
        if state.dmf.executions.get(execution.id) is execution:
            events.execution_finished(state, execution)


def _mirror(state: Any, execution: Execution) -> None:
    if state.dmf.executions.get(execution.id) is not execution:  # forgotten by a reset meanwhile
        return
    try:
        definitions.record_job_details(state.odata, execution)
    except Exception:  # the mirror is a convenience; never fail the execution for it
        log.exception("could not record the job details of %s", execution.id)


def _import_entity(
    state: Any,
    execution: Execution,
    item: PlannedEntity,
    progress: EntityExecution,
    package: Package | None,
    data: bytes | None,
    execute: bool,
) -> None:
    dmf = state.dmf
    progress.started_at = utc_now()
    progress.staging_status = EntityExecutionState.EXECUTING
    name = item.source.entity_name
    try:
        raw = data if data is not None else package.data_file(item.source) if package else b""
        source_rows = read_data_file(
            raw, item.source_format, entity_name=name, sheet=item.source.excel_sheet_name
        )
    except PackageError as exc:
        execution.errors.append(ExecutionError(name, "", "", exc.message, stage="staging"))
        execution.note(f"{name}: {exc.message}")
        progress.staging_errors += 1
        progress.staging_status = EntityExecutionState.ERROR
        progress.target_status = EntityExecutionState.NOT_RUN
        progress.completed_at = utc_now()
        return
    columns = (
        item.columns if item.columns is not None else automatic_columns(item.entity, source_rows.columns)
    )
    progress.key_fields = tuple(k.upper() for k in item.entity.entity.keys if k != "dataAreaId")
    staged = stage_rows(item.entity, columns, source_rows, progress.company)
    progress.staging_records = len(staged.rows)
    progress.staging_errors = len(staged.failures)
    for failure in staged.failures:
        for field_name, text in failure.problems:
            message = f"{text}\nSource line {failure.line} of {item.source.input_file_path or name}."
            execution.errors.append(
                ExecutionError(name, str(failure.rec_id), field_name, message, stage="staging")
            )
    if staged.failures:
        progress.staging_error_blob = errorfiles.upload_staging_errors(
            state, execution, progress, source_rows.columns, staged.failures
        )
    execution.note(f"{name}: {len(staged.rows)} record(s) staged, {len(staged.failures)} error(s).")
    dmf.pause(execution)
    progress.staging_status = (
        EntityExecutionState.ERROR if staged.failures and not staged.rows else EntityExecutionState.FINISHED
    )
    if not execute or execution.cancel_requested:
        progress.target_status = EntityExecutionState.NOT_RUN
        progress.completed_at = utc_now()
        return
    progress.target_status = EntityExecutionState.EXECUTING
    writer = TargetWriter(state.odata, dmf.odata_service, state.config.base_url)

    def stop() -> bool:
        return execution.cancel_requested

    for outcome in writer.write(item.entity, staged.rows, progress.company, stop):
        if outcome.action == "created":
            progress.target_created += 1
        elif outcome.action == "updated":
            progress.target_updated += 1
        else:
            progress.target_errors += 1
            progress.error_keys.append(
                tuple(
                    str(outcome.row.values.get(k, "")) for k in item.entity.entity.keys if k != "dataAreaId"
                )
            )
            for field_name, text in outcome.problems:
                message = error_message(item.entity, outcome.row, text)
                execution.errors.append(ExecutionError(name, str(outcome.row.rec_id), field_name, message))
    execution.note(
        f"{name}: {progress.target_created} created, {progress.target_updated} updated, "
        f"{progress.target_errors} error(s)."
    )
    dmf.pause(execution)
    progress.target_status = (
        EntityExecutionState.ERROR
        if progress.target_errors and not progress.target_records
        else EntityExecutionState.FINISHED
    )
    progress.completed_at = utc_now()
