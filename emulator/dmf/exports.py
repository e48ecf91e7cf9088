"""Exports: build real data packages (ref §7) from the store for an export data project.

A package holds one data file per entity (``<entity name>.<ext>``, in the project's source format, columns
= staging field names), then ``Manifest.xml`` and ``PackageHeader.xml`` written like Microsoft's sample:
UTF-16 LE with BOM, one line, no declaration, elements in DataContractSerializer (alphabetical) order
(ref §7.2, §7.3).
The package-API flow runs on a background thread and leaves the zip in the ``dmf`` container for
GetExportedPackageUrl; ``export_now`` (the connector's entry point) builds it synchronously on disk.
"""

from __future__ import annotations

import logging
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

from emulator.dmf import definitions, events
from emulator.dmf.datafiles import EXTENSIONS, canonical_format, write_data_file
from emulator.dmf.definitions import DefinitionGroup, DmfEntity, GroupEntity, resolve_entity
from emulator.dmf.errorfiles import safe_name
from emulator.dmf.model import (
    DmfError,
    EntityExecution,
    EntityExecutionState,
    Execution,
    ExecutionError,
    ExecutionStatus,
    new_execution_id,
    utc_now,
)
from emulator.dmf.packages import I_NS, NS
from emulator.dmf.processing import company_of
from emulator.odata.catalog import EMPTY_DATETIME
from emulator.odata.schema import EDM_BOOLEAN, EDM_DATE, EDM_DATETIMEOFFSET, EDM_DECIMAL, Property
from emulator.odata.store import quote_ident

log = logging.getLogger(__name__)
# Microsoft's 2017 sample says 1; a generator that imports on current environments writes 2 (ref §7.2).
PACKAGE_VERSION = "2"
MANIFEST_TYPE = (
    "Microsoft.Dynamics.AX.Framework.Tools.DataManagement.Serialization.DataManagementPackageManifest"
)


def export_group(state: Any, name: str) -> DefinitionGroup:
    group = definitions.load_group(state.odata, name)
    if group is None:
        raise DmfError(f"The data project {name} does not exist. Create the export project before exporting.")
    if group.operation != "Export":
        raise DmfError(f"The data project {name} is not an export project.")
    if not group.entities:
        raise DmfError(f"The data project {name} has no entity to export.")
    return group


def new_export(
    state: Any,
    group: DefinitionGroup,
    company: str,
    *,
    execution_id: str | None,
    source: str,
    package_name: str = "",
    entities: Sequence[GroupEntity] | None = None,
) -> Execution:
    chosen = list(entities if entities is not None else group.entities)
    execution = Execution(
        id=(execution_id or "").strip() or new_execution_id(group.name),
        kind="export",
        definition_group=group.name,
        legal_entity=company,
        source=source,
        package_name=package_name or group.name,
    )
    for item in chosen:
        entity = resolve_entity(state.odata, item.entity_name)
        execution.entities.append(
            EntityExecution(item.entity_name, entity.set_name, item.source_format, company)
        )
    return execution


def export_now(
    state: Any, *, definition_group: str, legal_entity: str | None, execution_id: str | None, source: str
) -> Path:
    group = export_group(state, definition_group)
    execution = new_export(
        state, group, company_of(state, legal_entity), execution_id=execution_id, source=source
    )
    state.dmf.executions.add(execution)
    execution.start()
    path = _package_path(state, execution)
    try:
        build_package(state, execution, group, path, paced=False)
    except Exception as exc:
        execution.errors.append(ExecutionError("", "", "", f"{type(exc).__name__}: {exc}", stage="package"))
        execution.finish(ExecutionStatus.FAILED)
        raise
    execution.export_path = path
    execution.finish()
    definitions.record_job_details(state.odata, execution)
    return path


def run_export(state: Any, execution: Execution, group: DefinitionGroup, top: int | None) -> None:
    """The package-API export on its background thread; the zip ends in the blob store."""
    dmf = state.dmf
    path = _package_path(state, execution)
    try:
        dmf.pause(execution)
        if execution.cancel_requested:
            execution.finish()
            return
        execution.start()
        execution.note(f"Export of data project {group.name} started in company {execution.legal_entity}.")
        definitions.record_job_details(state.odata, execution)
        build_package(state, execution, group, path, paced=True, top=top)
        if execution.cancel_requested:
            execution.finish()
            return
        blob = f"exports/{safe_name(execution.id)}/{safe_name(execution.package_name)}"
        blob += "" if blob.lower().endswith(".zip") else ".zip"
        dmf.blobs.upload(blob, path, "application/zip")
        execution.package_blob, execution.export_path = blob, path
        execution.finish()
        url = dmf.blobs.sas_url(blob, write=False, expiry_seconds=dmf.settings.sas_expiry_seconds)
        events.execution_finished(state, execution, url)
    except DmfError as exc:
        execution.errors.append(ExecutionError("", "", "", exc.message, stage="package"))
        execution.finish(ExecutionStatus.FAILED)
    except Exception as exc:  # an emulator bug must still end the execution
        log.exception("DMF export %s failed", execution.id)
        execution.errors.append(ExecutionError("", "", "", f"{type(exc).__name__}: {exc}", stage="package"))
        execution.finish(ExecutionStatus.FAILED)
    finally:
        if dmf.executions.get(execution.id) is execution:  # not forgotten by a reset meanwhile
            definitions.record_job_details(state.odata, execution)


def _package_path(state: Any, execution: Execution) -> Path:
    folder: Path = state.dmf.work_dir / "exports"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{safe_name(execution.id)}.zip"


def build_package(
    state: Any,
    execution: Execution,
    group: DefinitionGroup,
    path: Path,
    *,
    paced: bool,
    top: int | None = None,
) -> None:
    written: list[tuple[GroupEntity, DmfEntity, str, list[Property]]] = []
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for progress in execution.entities:
            if execution.cancel_requested:
                return
            item = group.entity(progress.entity_name) or GroupEntity(
                progress.entity_name, progress.source_format
            )
            entity = resolve_entity(state.odata, item.entity_name)
            fmt = canonical_format(item.source_format or "CSV-Unicode")
            progress.started_at = utc_now()
            progress.staging_status = progress.target_status = EntityExecutionState.EXECUTING
            columns = entity.export_properties()
            rows = _rows(state, entity, columns, execution.legal_entity, top)
            file_name = f"{item.entity_name}.{EXTENSIONS[fmt]}"
            data = write_data_file(
                fmt,
                entity.aot_name,
                item.entity_name.replace(" ", "_"),
                [entity.staging_field(p) for p in columns],
                rows,
            )
            archive.writestr(file_name, data)
            progress.staging_records = progress.target_created = len(rows)
            if paced:
                state.dmf.pause(execution)
            progress.staging_status = progress.target_status = EntityExecutionState.FINISHED
            progress.completed_at = utc_now()
            written.append((item, entity, file_name, columns))
            execution.note(f"{item.entity_name}: {len(rows)} record(s) exported to {file_name}.")
        archive.writestr("Manifest.xml", _utf16(manifest_xml(group, written)))
        archive.writestr("PackageHeader.xml", _utf16(header_xml(group.description or group.name)))


def _rows(
    state: Any, entity: DmfEntity, columns: list[Property], company: str, top: int | None
) -> list[list[str]]:
    etype = entity.entity
    sql = f"SELECT {', '.join(quote_ident(p.name) for p in columns)} FROM {quote_ident(etype.set_name)}"
    params: list[Any] = []
    if etype.company_specific:
        sql += ' WHERE "dataAreaId" = ?'
        params.append(company)
    sql += " ORDER BY " + ", ".join(quote_ident(k) for k in etype.keys)
    if top:  # ExportToPackagePreview: "No top count condition will be applied if set to zero" (ref §3.2)
        sql += f" LIMIT {int(top)}"
    cursor = state.odata.connection().execute(sql, params)
    return [[export_text(p, v) for p, v in zip(columns, row, strict=True)] for row in cursor]


def export_text(prop: Property, value: Any) -> str:
    if value is None:
        return ""
    if prop.edm_type == EDM_BOOLEAN:
        return "Yes" if value else "No"
    if prop.edm_type == EDM_DECIMAL:
        return (f"{float(value):.6f}").rstrip("0").rstrip(".")
    if prop.edm_type == EDM_DATETIMEOFFSET and value == EMPTY_DATETIME:
        return ""
    if prop.edm_type == EDM_DATE and value == "1900-01-01":
        return ""
    return str(value)


# --- Microsoft's package XML ------------------------------------------------------------------------------


def _utf16(text: str) -> bytes:
    return b"\xff\xfe" + text.encode("utf-16-le")


def _el(name: str, value: str | int | bool | None) -> str:
    if value is None or value == "":
        return f"<{name} />"
    if isinstance(value, bool):
        value = "true" if value else "false"
    return f"<{name}>{escape(str(value))}</{name}>"


def header_xml(description: str) -> str:
    return (
        f'<DataManagementPackageHeader xmlns:i="{I_NS}" xmlns="{NS}">{_el("Description", description)}'
        f"{_el('ManifestType', MANIFEST_TYPE)}{_el('PackageType', 'DefinitionGroup')}"
        f"{_el('PackageVersion', PACKAGE_VERSION)}</DataManagementPackageHeader>"
    )


def _nil(name: str) -> str:
    return f'<{name} i:nil="true" />'


def _map_xml(field: str) -> str:
    return "".join(
        [
            "<EntityMap>",
            _el("ArrayIndex", 0),
            _el("EntityField", field),
            _nil("EntityFieldConversionList"),
            _el("IsAutoDefault", False),
            _el("IsAutoGenerated", False),
            _el("IsDefaultValueEqualNull", False),
            _el("UseTextQualifier", False),
            _el("XMLField", field),
            "</EntityMap>",
        ]
    )


def _entity_xml(item: GroupEntity, entity: DmfEntity, file_name: str, columns: list[Property]) -> str:
    maps = "".join(_map_xml(entity.staging_field(p)) for p in columns)
    return "".join(
        [
            f"<DataManagementPackageEntityData><EntityMapList>{maps}</EntityMapList>",
            _el("EntityName", item.entity_name),
            _nil("EntityTransformList"),
            _el("ExcelSheetName", ""),
            _el("ExecutionUnit", item.execution_unit),
            _el("FailExecutionUnitOnError", False),
            _el("FailLevelOnError", False),
            _el("InputFilePath", file_name),
            _el("LevelInExecutionUnit", item.level),
            _el("RunBusinessLogic", True),
            _el("RunBusinessValidation", True),
            _el("SampleFilePath", ""),
            _el("SequenceInLevel", item.sequence),
            _el("SourceFormat", canonical_format(item.source_format)),
            _el("ValidationStatus", "Yes"),
            "</DataManagementPackageEntityData>",
        ]
    )


def manifest_xml(
    group: DefinitionGroup, written: Sequence[tuple[GroupEntity, DmfEntity, str, list[Property]]]
) -> str:
    entities = "".join(_entity_xml(*item) for item in written)
    return (
        f'<DataManagementPackageManifest xmlns:i="{I_NS}" xmlns="{NS}">'
        f"{_el('DefinitionGroupName', group.name)}{_el('Description', group.description or group.name)}"
        f"<PackageEntityList>{entities}</PackageEntityList></DataManagementPackageManifest>"
    )
