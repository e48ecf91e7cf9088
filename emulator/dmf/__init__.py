"""The emulator's Data management framework (DMF): the package REST API (ref §3) and real package processing.

``POST /data/DataManagementDefinitionGroups/Microsoft.Dynamics.DataEntities.{Action}`` actions (actions.py)
run over an executions journal (model.py): packages are read (packages.py, datafiles.py, xlsx.py), checked
and journaled (processing.py), then processed on a background thread (importing.py): staging conversions
(staging.py), writes through the OData store's own write path (target.py), error files (errorfiles.py).
Exports build real packages (exports.py); data projects and DMF entity names live in definitions.py; every
blob sits in the Azurite container ``dmf`` behind SAS URLs (blobs.py); events.py raises the DMF business
events; wiring.py attaches it all to the emulator state.
Admin routes: ``/_emulator/dmf/...`` (admin.py); docs: docs/emulator.md "Data management (DMF) package API".

Internal API for the other emulator families (the recurring-integrations connector, ``emulator/connector/``)
--------------------------------------------------------------------------------------------------------
Everything is reached through ``state.dmf`` (a ``DmfModel``, built by ``emulator.app.build_state``) or the
functions below; all are thread-safe and none needs the event loop (call them from a threadpool).

``import_package(state, package, *, definition_group, legal_entity, execute=True, overwrite=False,
execution_id=None, source="connector", message_id=None) -> Execution``
    ``package``: a path, bytes or a binary file object holding a data package zip. Starts the import on a
    background thread and returns at once with the execution (status ``NotRun``). Problems with the
    content (not a zip, no manifest, unknown entity, wrong encoding...) never raise: the execution ends
    ``Failed`` and ``execution.errors`` / ``execution.log`` say why (a recurring job's PreProcessingError).
    ``definition_group`` None or "" = the manifest's ``DefinitionGroupName``; ``legal_entity`` None = the
    emulator's default company. ``execution_id`` None = generated; an id already in the journal raises
    ``DmfError`` (the only exception). Imports with ``source="connector"`` are
    not subject to the "ImportFromPackage must not run in parallel" rule (that one is for the package API).

``import_file(state, data, *, entity_name, legal_entity, execution_id=None, source_format=None,
definition_group=None, message_id=None, source="connector") -> Execution``
    One data file for a recurring "File" job (``?entity=`` = the DMF entity name, e.g. "Customer groups").
    ``source_format`` None = the definition group's format for that entity when it has one, else sniffed
    (xlsx -> EXCEL, UTF-16 BOM -> CSV-Unicode, ``<`` -> XML-Element, else CSV). Columns map to staging
    fields by name (what the generated mapping of a file job does). Same asynchronous behaviour as above.

``build_export_package(state, *, definition_group, legal_entity, execution_id=None, source="connector")
-> Path``
    Builds a real export package (Manifest.xml, PackageHeader.xml, one data file per entity) from the
    store, synchronously, into ``{data_dir}/dmf/exports/``; the caller may move or delete the file.
    An execution (kind "export", status Succeeded) is journaled under ``execution_id``. Raises
    ``DmfError`` when the definition group does not exist or is not an export project.

``state.dmf.executions.get(execution_id) -> Execution | None``
    ``Execution``: ``id``, ``status`` (a DMFExecutionSummaryStatus string: NotRun, Executing, Succeeded,
    PartiallySucceeded, Failed, Canceled), ``done``, ``wait(timeout) -> bool``, ``definition_group``,
    ``legal_entity``, ``message_id``, ``started_at`` / ``completed_at`` (datetime | None), ``log`` (text),
    ``errors`` (``ExecutionError``: entity_name, record_id, field, message), ``entities``
    (``EntityExecution`` with staging/target counts and ``EntityExecutionState`` statuses) and
    ``execution_detail()`` -> list of dicts already in the recurring-integrations ``ExecutionDetail``
    contract shape (ref §4.3), ``message_status()`` -> the ref §4.4 message status an import implies
    (Processing / Processed / ProcessedWithErrors / PreProcessingError).
``state.dmf.executions.by_message(message_id) -> Execution | None``.

Message status actions (decision, so the two families do not both register them)
-----------------------------------------------------------------------------------
This package registers ``GetMessageStatus`` (``{"messageId"}``) and ``GetExecutionIdByMessageId``
(``{"_messageId"}``) with the other package-API actions. They ask the connector's message journal first,
duck-typed as ``state.connector`` (an attribute the connector adds to ``EmulatorState``) offering:

    state.connector.message_status(message_id: str) -> str | None        # ref §4.4 spelling; None = unknown
    state.connector.execution_id_for_message(message_id: str) -> str | None  # None / "" = not picked up yet

When ``state.connector`` or a method is missing, or answers None, they fall back to the executions the
connector started with ``message_id=...`` (``Execution.message_status()``, ``Execution.id``). Unknown
message: GetMessageStatus answers 400 "...were not found"; GetExecutionIdByMessageId answers the empty GUID
(third-party observation, ref §3.2).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, BinaryIO

from emulator.dmf.model import (
    DmfError,
    DmfModel,
    EntityExecution,
    EntityExecutionState,
    Execution,
    ExecutionError,
    ExecutionStatus,
)

if TYPE_CHECKING:
    from pathlib import Path

__all__ = [
    "DmfError",
    "DmfModel",
    "EntityExecution",
    "EntityExecutionState",
    "Execution",
    "ExecutionError",
    "ExecutionStatus",
    "build_export_package",
    "import_file",
    "import_package",
]


def import_package(
    state: Any,
    package: Path | bytes | BinaryIO,
    *,
    definition_group: str | None,
    legal_entity: str | None,
    execute: bool = True,
    overwrite: bool = False,
    execution_id: str | None = None,
    source: str = "connector",
    message_id: str | None = None,
) -> Execution:
    """Start importing a data package; see the module docstring."""
    from emulator.dmf.processing import plan_package, start_import

    return start_import(
        state,
        package,
        ".zip",
        lambda path, owns: plan_package(state, path, definition_group, overwrite, owns),
        group=definition_group,
        legal_entity=legal_entity,
        execute=execute,
        execution_id=execution_id,
        source=source,
        message_id=message_id,
    )


def import_file(
    state: Any,
    data: Path | bytes | BinaryIO,
    *,
    entity_name: str,
    legal_entity: str | None,
    execution_id: str | None = None,
    source_format: str | None = None,
    definition_group: str | None = None,
    message_id: str | None = None,
    source: str = "connector",
) -> Execution:
    """Start importing one data file of a DMF entity; see the module docstring."""
    from emulator.dmf.processing import plan_file, start_import

    return start_import(
        state,
        data,
        ".dat",
        lambda path, owns: plan_file(
            state,
            path,
            owns,
            entity_name=entity_name,
            source_format=source_format,
            definition_group=definition_group,
        ),
        group=definition_group,
        legal_entity=legal_entity,
        execute=True,
        execution_id=execution_id,
        source=source,
        message_id=message_id,
    )


def build_export_package(
    state: Any,
    *,
    definition_group: str,
    legal_entity: str | None,
    execution_id: str | None = None,
    source: str = "connector",
) -> Path:
    """Build an export package zip on disk now; see the module docstring."""
    from emulator.dmf.exports import export_now

    return export_now(
        state,
        definition_group=definition_group,
        legal_entity=legal_entity,
        execution_id=execution_id,
        source=source,
    )
