"""Imports: plan (check the package and the data project), journal, then process on a background thread
(importing.py).

Timeline of one import (each step lasts ``settings.step_delay_seconds``): queued (``NotRun``) -> per entity
in ExecutionUnit / Level / Sequence order: source -> staging, staging -> target (``Executing``) -> final
status: ``Succeeded`` (no errors), ``PartiallySucceeded`` (some rows failed), ``Failed`` (nothing
imported, or the package/file could not be read), ``Canceled`` (admin). ``execute=false`` stops after staging.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

from emulator.dmf import definitions
from emulator.dmf.datafiles import EXTENSIONS, canonical_format, sniff_format
from emulator.dmf.definitions import DefinitionGroup, GroupEntity, resolve_entity
from emulator.dmf.importing import ImportPlan, PlannedEntity, run_import
from emulator.dmf.model import (
    DmfError,
    EntityExecution,
    Execution,
    ExecutionError,
    ExecutionStatus,
    new_execution_id,
)
from emulator.dmf.packages import Manifest, ManifestEntity, Package, PackageError
from emulator.dmf.staging import manifest_columns

PACKAGE_API = "package-api"


def spool(state: Any, data: Path | bytes | BinaryIO, suffix: str) -> tuple[Path, bool]:
    """Put the input in a file of the DMF work dir (streamed); (path, whether we own it)."""
    if isinstance(data, Path):
        return data, False
    folder = state.dmf.work_dir / "incoming"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{uuid.uuid4().hex}{suffix}"
    with path.open("wb") as target:
        if isinstance(data, bytes | bytearray):
            target.write(data)
        else:
            shutil.copyfileobj(data, target, 1024 * 1024)
    return path, True


def company_of(state: Any, legal_entity: str | None) -> str:
    """The execution's legal entity; DmfError when the company does not exist (ref §1.2 default)."""
    company = (legal_entity or state.config.default_company).strip().lower()
    store = state.odata
    if "LegalEntities" in store.catalog.entities and not store.exists(
        store.connection(), "LegalEntities", {"LegalEntityId": company}
    ):
        raise DmfError(f"Company '{company}' does not exist.")
    return company


def plan_package(
    state: Any, path: Path, definition_group: str | None, overwrite: bool, owns: bool
) -> ImportPlan:
    """Check a package against the environment; PackageError / DmfError tell what is wrong."""
    with Package(path) as package:
        manifest = package.manifest
    if not manifest.entities:
        raise PackageError("The package manifest lists no entity.")
    store = state.odata
    items: list[PlannedEntity] = []
    notes: list[str] = []
    for source in sorted(manifest.entities, key=lambda e: e.order):
        entity = resolve_entity(store, source.entity_name)
        fmt = canonical_format(source.source_format or "EXCEL")
        columns = manifest_columns(entity, source.field_map)
        if not columns:  # third-party measured: no map -> the import "succeeds" with zero rows (ref §7.3)
            notes.append(
                f"No field mapping in the manifest for entity {source.entity_name}: no rows are staged."
            )
        items.append(PlannedEntity(source, entity, fmt, columns))
    group_name = (definition_group or "").strip() or manifest.definition_group or "Import"
    existing = definitions.load_group(store, group_name)
    plan = ImportPlan(group_name, manifest.description, items, path, owns_spool=owns, notes=notes)
    if existing is not None and existing.operation != "Import":
        raise DmfError(f"The data project {group_name} is an {existing.operation.lower()} project.")
    if existing is None or overwrite:
        plan.save_group = _group_from_manifest(group_name, manifest)
    else:
        missing = [
            i.source.entity_name
            for i in items
            if existing.entity(i.entity.name) is None and existing.entity(i.source.entity_name) is None
        ]
        if missing:
            raise DmfError(
                f"Entity {missing[0]} is not part of the data project {group_name}. Import the package with "
                "overwrite set to true to update the data project from the package manifest."
            )
    return plan


def _group_from_manifest(name: str, manifest: Manifest) -> DefinitionGroup:
    return DefinitionGroup(
        name=name,
        description=manifest.description or name,
        operation="Import",
        entities=[
            GroupEntity(
                e.entity_name,
                canonical_format(e.source_format or "EXCEL"),
                e.execution_unit,
                e.level,
                e.sequence,
            )
            for e in manifest.entities
        ],
    )


def launch(
    state: Any,
    plan: ImportPlan,
    *,
    legal_entity: str | None,
    execute: bool,
    execution_id: str | None,
    source: str,
    message_id: str | None,
    package_blob: str | None = None,
) -> Execution:
    """Journal the execution (refusing a parallel package-API import), save the project, start the work."""
    dmf = state.dmf
    company = company_of(state, legal_entity)
    execution = Execution(
        id=(execution_id or "").strip() or new_execution_id(plan.group),
        kind="import",
        definition_group=plan.group,
        legal_entity=company,
        source=source,
        message_id=message_id,
        package_blob=package_blob,
    )
    execution.entities = [
        EntityExecution(
            i.source.entity_name, i.entity.set_name, i.source_format, company, i.source.input_file_path
        )
        for i in plan.items
    ]
    exclusive = source == PACKAGE_API and dmf.settings.reject_parallel_imports
    dmf.executions.add(
        execution,
        exclusive=(lambda other: other.kind == "import" and other.source == PACKAGE_API)
        if exclusive
        else None,
    )
    try:
        if plan.save_group is not None:
            definitions.save_group(state.odata, plan.save_group)
    except Exception:
        dmf.executions.remove(execution.id)
        raise
    for note in plan.notes:
        execution.note(note)
    execution.note(f"Import of data project {plan.group} queued in company {company} ({source}).")
    dmf.run_in_background(execution, lambda: run_import(state, execution, plan, execute))
    return execution


def failed_execution(
    state: Any,
    message: str,
    *,
    group: str,
    legal_entity: str | None,
    execution_id: str | None,
    source: str,
    message_id: str | None,
) -> Execution:
    """An execution that failed before it could start (unreadable package, unknown entity, ...)."""
    execution = Execution(
        id=(execution_id or "").strip() or new_execution_id(group or "Import"),
        kind="import",
        definition_group=group,
        legal_entity=(legal_entity or state.config.default_company).lower(),
        source=source,
        message_id=message_id,
    )
    execution.errors.append(ExecutionError("", "", "", message, stage="package"))
    state.dmf.executions.add(execution)
    execution.note(message)
    execution.finish(ExecutionStatus.FAILED)
    return execution


def start_import(
    state: Any,
    data: Path | bytes | BinaryIO,
    suffix: str,
    make_plan: Callable[[Path, bool], ImportPlan],
    *,
    group: str | None,
    legal_entity: str | None,
    execute: bool,
    execution_id: str | None,
    source: str,
    message_id: str | None,
) -> Execution:
    """Spool ``data``, plan its import (``make_plan(path, owns_spool)``) and launch it; a DmfError on the way
    ends as a failed execution (and a spool file of ours is removed)."""
    path, owns = spool(state, data, suffix)
    try:
        return launch(
            state,
            make_plan(path, owns),
            legal_entity=legal_entity,
            execute=execute,
            execution_id=execution_id,
            source=source,
            message_id=message_id,
        )
    except DmfError as exc:
        if owns:
            path.unlink(missing_ok=True)
        return failed_execution(
            state,
            exc.message,
            group=group or "",
            legal_entity=legal_entity,
            execution_id=execution_id,
            source=source,
            message_id=message_id,
        )


def plan_file(
    state: Any,
    path: Path,
    owns: bool,
    *,
    entity_name: str,
    source_format: str | None,
    definition_group: str | None,
) -> ImportPlan:
    """One data file of ``entity_name``; its format as given, else the data project's, else sniffed."""
    entity = resolve_entity(state.odata, entity_name)
    group = definitions.load_group(state.odata, definition_group) if definition_group else None
    member = group.entity(entity.name) or group.entity(entity_name) if group else None
    if source_format:
        fmt = canonical_format(source_format)
    elif member is not None and member.source_format:
        fmt = canonical_format(member.source_format)
    else:
        with path.open("rb") as head:
            fmt = sniff_format(head.read(512))
    manifest_entity = ManifestEntity(entity_name, fmt, f"{entity.name}.{EXTENSIONS[fmt]}")
    return ImportPlan(
        definition_group or entity.name,
        entity.name,
        [PlannedEntity(manifest_entity, entity, fmt, None)],
        path,
        single_file=True,
        owns_spool=owns,
    )
