"""The package REST API (ref §3.2): actions bound to ``DataManagementDefinitionGroups``.

Quirks reproduced: ``GetAzureWriteUrl``, ``GetExecutionErrors`` and ``GetEntityExecutionSummaryStatusList``
answer JSON *inside a string*; URL getters answer ``""`` until ready; a failed ``ExportToPackage`` answers the
empty GUID (what RIS tests for, ref §3.2). Choices where the reference is UNCONFIRMED:
- Unknown execution id: ``GetExecutionSummaryStatus`` answers ``Unknown``; the other execution actions answer
  400 "... were not found" (ref §1.7). The admin setting ``status_not_found_polls`` makes the first polls of
  a new execution answer that 400 too, as seen before the execution row exists (ref §1.7, [S31]).
- A second ``ImportFromPackage`` while one still runs answers 500 "Exception occurred while executing action
  ImportFromPackage: ... must not be called in parallel ..." (ref §3.1 only says "it will fail").
- ``GetEntityExecutionSummaryStatusList``: a string holding a JSON array of RIS's ``EntityExecutionStatus``
  objects (EntityName, Company, StagingRecords, StagingStatus, ..., ref §4.3 field names).
- ``ExportToPackagePreview``: the row limit is read from ``count`` or ``exportPreviewCount`` (ref §3.2).
- ``reExecute=true`` on an existing export id runs that export again under the same id.
- ``DeleteExecutionHistoryJob``: void (204). ``ExportFromPackage``: exports the entities the package's
  manifest lists (its formats), answering the execution id.
"""

from __future__ import annotations

import json
import tempfile
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

from emulator.dmf import definitions, errorfiles, exports, processing
from emulator.dmf.blobs import unique_blob_name
from emulator.dmf.model import EMPTY_GUID, DmfError, Execution, ExecutionStatus
from emulator.dmf.packages import Package, PackageError
from emulator.odata.actions import Action, ActionCall, ActionFailed, ActionParameter
from emulator.odata.errors import bad_request
from emulator.odata.schema import EDM_BOOLEAN, EDM_INT32, EDM_STRING

SET = definitions.GROUPS_SET
_S, _B, _I = EDM_STRING, EDM_BOOLEAN, EDM_INT32


def _p(name: str, edm: str = _S, *, required: bool = False) -> ActionParameter:
    return ActionParameter(name, edm, nullable=not required)


_IMPORT_PARAMS = (
    _p("packageUrl", required=True),
    _p("definitionGroupId"),
    _p("executionId"),
    _p("execute", _B),
    _p("overwrite", _B),
    _p("legalEntityId"),
)
_EXPORT_PARAMS = (
    _p("definitionGroupId", required=True),
    _p("packageName"),
    _p("executionId"),
    _p("reExecute", _B),
    _p("legalEntityId"),
)
_EXECUTION = (_p("executionId", required=True),)
_EXECUTION_ENTITY = (_p("executionId", required=True), _p("entityName", required=True))


def _fail(exc: DmfError) -> Exception:
    """400 in the D365 envelope, or 500 "Exception occurred while executing action ..." (server side)."""
    return ActionFailed(exc.message) if exc.status >= 500 else bad_request(exc.message)


def not_found(execution_id: str) -> Exception:
    return bad_request(f"The execution details for the execution ID '{execution_id}' were not found.")


class PackageApi:
    def __init__(self, state: Any) -> None:
        self.state = state

    @property
    def dmf(self) -> Any:
        return self.state.dmf

    def _execution(self, call: ActionCall) -> Execution:
        execution_id = str(call.parameters.get("executionId") or "")
        execution: Execution | None = self.dmf.executions.get(execution_id)
        if execution is None:
            raise not_found(execution_id)
        return execution

    def _sas(self, blob: str, *, write: bool = False) -> str:
        return str(
            self.dmf.blobs.sas_url(blob, write=write, expiry_seconds=self.dmf.settings.sas_expiry_seconds)
        )

    # --- upload and import --------------------------------------------------------------------------------

    def get_azure_write_url(self, call: ActionCall) -> str:
        blob = unique_blob_name(call.parameters.get("uniqueFileName"))
        try:
            url = self._sas(blob, write=True)
        except DmfError as exc:
            raise _fail(exc) from None
        blob_id = "{" + str(uuid.uuid4()).upper() + "}"
        # JSON inside the string value (ref §3.2)
        return json.dumps({"BlobId": blob_id, "BlobUrl": url}, separators=(",", ":"))

    def _download(self, url: str) -> Any:
        blob = self.dmf.blobs.blob_name_from_url(url)
        if blob is None:
            raise DmfError(
                "The package URL does not point to the blob storage of this environment: upload the package "
                "to the URL that GetAzureWriteUrl returned."
            )
        folder = self.dmf.work_dir / "incoming"
        folder.mkdir(parents=True, exist_ok=True)
        spool = tempfile.NamedTemporaryFile(dir=folder, suffix=".zip", delete=False)  # noqa: SIM115
        with spool:
            self.dmf.blobs.download_to(blob, spool)
        return blob, spool.name

    def import_from_package(self, call: ActionCall) -> str:
        from pathlib import Path

        params = call.parameters
        path: Path | None = None
        try:
            blob, name = self._download(str(params["packageUrl"] or ""))
            path = Path(name)
            plan = processing.plan_package(
                self.state, path, params.get("definitionGroupId"), bool(params.get("overwrite")), owns=True
            )
            execution = processing.launch(
                self.state,
                plan,
                legal_entity=params.get("legalEntityId") or call.request.company,
                execute=params.get("execute") is None or bool(params.get("execute")),
                execution_id=params.get("executionId"),
                source=processing.PACKAGE_API,
                message_id=None,
                package_blob=blob,
            )
        except DmfError as exc:
            if path is not None:
                path.unlink(missing_ok=True)
            raise _fail(exc) from None
        return execution.id

    # --- exports ------------------------------------------------------------------------------------------

    def _start_export(
        self, call: ActionCall, group: definitions.DefinitionGroup, top: int | None = None
    ) -> str:
        params = call.parameters
        company = processing.company_of(self.state, params.get("legalEntityId") or call.request.company)
        execution_id = str(params.get("executionId") or "").strip()
        if execution_id and params.get("reExecute") and self.dmf.executions.get(execution_id) is not None:
            self.dmf.executions.remove(execution_id)
        wanted = [n.strip().lower() for n in str(params.get("entityList") or "").split(",") if n.strip()]
        chosen = [e for e in group.entities if not wanted or e.entity_name.lower() in wanted]
        execution = exports.new_export(
            self.state,
            group,
            company,
            execution_id=execution_id,
            source=processing.PACKAGE_API,
            package_name=str(params.get("packageName") or ""),
            entities=chosen,
        )
        self.dmf.executions.add(execution)
        self.dmf.run_in_background(execution, lambda: exports.run_export(self.state, execution, group, top))
        return execution.id

    def export_to_package(self, call: ActionCall) -> str:
        try:
            group = exports.export_group(self.state, str(call.parameters["definitionGroupId"] or ""))
        except DmfError:
            return EMPTY_GUID  # RIS treats this value as the failure answer (ref §3.2)
        try:
            return self._start_export(call, group)
        except DmfError as exc:
            raise _fail(exc) from None

    def export_preview(self, call: ActionCall) -> str:
        top = call.parameters.get("count") or call.parameters.get("exportPreviewCount") or 0
        try:
            group = exports.export_group(self.state, str(call.parameters["definitionGroupId"] or ""))
            return self._start_export(call, group, top=int(top) or None)
        except DmfError as exc:
            raise _fail(exc) from None

    def export_from_package(self, call: ActionCall) -> str:
        from pathlib import Path

        params = call.parameters
        try:
            _, name = self._download(str(params["packageUrl"] or ""))
            try:
                with Package(Path(name)) as package:
                    manifest = package.manifest
            finally:
                Path(name).unlink(missing_ok=True)
            group_name = str(params.get("definitionGroupId") or manifest.definition_group or "Export")
            group = definitions.DefinitionGroup(
                group_name,
                manifest.description or group_name,
                "Export",
                [
                    definitions.GroupEntity(
                        e.entity_name, e.source_format or "CSV-Unicode", e.execution_unit, e.level, e.sequence
                    )
                    for e in sorted(manifest.entities, key=lambda e: e.order)
                ],
            )
            for item in group.entities:
                definitions.resolve_entity(self.state.odata, item.entity_name)
            if params.get("overwrite") or definitions.load_group(self.state.odata, group_name) is None:
                definitions.save_group(self.state.odata, group)
            return self._start_export(call, group)
        except (DmfError, PackageError) as exc:
            raise _fail(exc) from None

    def get_exported_package_url(self, call: ActionCall) -> str:
        execution = self._execution(call)
        if execution.kind != "export" or execution.package_blob is None or not execution.done:
            return ""  # not ready yet (ref §3.2)
        return self._sas(execution.package_blob)

    # --- status and errors --------------------------------------------------------------------------------

    def get_execution_summary_status(self, call: ActionCall) -> str:
        execution_id = str(call.parameters.get("executionId") or "")
        execution = self.dmf.executions.get(execution_id)
        if execution is None:
            return str(ExecutionStatus.UNKNOWN)
        execution.status_polls += 1
        if execution.status_polls <= self.dmf.settings.status_not_found_polls:
            raise not_found(execution_id)
        return str(execution.status)

    def get_entity_status_list(self, call: ActionCall) -> str:
        return json.dumps(self._execution(call).execution_detail(), separators=(",", ":"))

    def get_execution_errors(self, call: ActionCall) -> str:
        errors = [e.to_json() for e in self._execution(call).errors]
        if self.dmf.settings.strict_error_json:
            return json.dumps(errors, separators=(",", ":"))
        # as third parties report it (ref §3.2): quotes and line breaks inside messages left unescaped
        items = ",".join(
            f'{{"RecordId":"{e["RecordId"]}","Field":"{e["Field"]}","ErrorMessage":"{e["ErrorMessage"]}"}}'
            for e in errors
        )
        return f"[{items}]"

    def _entity(self, call: ActionCall) -> tuple[Execution, Any]:
        execution = self._execution(call)
        name = str(call.parameters.get("entityName") or "")
        progress = execution.entity(name)
        if progress is None:
            raise bad_request(f"Entity {name} is not part of the execution '{execution.id}'.")
        return execution, progress

    def get_staging_error_file_url(self, call: ActionCall) -> str:
        _, progress = self._entity(call)
        return self._sas(progress.staging_error_blob) if progress.staging_error_blob else ""

    def generate_error_keys_file(self, call: ActionCall) -> bool:
        _, progress = self._entity(call)
        if not progress.error_keys:
            return False
        if progress.error_keys_pending_polls is None:
            progress.error_keys_pending_polls = self.dmf.settings.error_keys_polls
        return True

    def get_error_keys_file_url(self, call: ActionCall) -> str:
        execution, progress = self._entity(call)
        if progress.error_keys_pending_polls is None or not progress.error_keys:
            return ""  # never generated, or no errors (ref §3.2)
        if progress.error_keys_pending_polls > 0:
            progress.error_keys_pending_polls -= 1
            return ""  # still generating
        try:
            blob = errorfiles.error_keys_blob(self.state, execution, progress)
        except DmfError as exc:
            raise _fail(exc) from None
        return self._sas(blob) if blob else ""

    def get_summary_page_url(self, call: ActionCall) -> str:
        execution = self._execution(call)
        company, job = execution.legal_entity.upper(), quote(execution.id)
        return f"{call.request.base_url}/?cmp={company}&mi=DMFExecutionSummary&executionId={job}"

    def delete_execution_history(self, call: ActionCall) -> None:
        execution = self._execution(call)
        execution.request_cancel()
        self.dmf.executions.remove(execution.id)
        definitions.delete_job_details(self.state.odata, execution.id)

    # --- recurring-integration messages (the connector's journal first, see emulator/dmf/__init__.py) ----

    def _connector(self, name: str, message_id: str) -> Any:
        method = getattr(getattr(self.state, "connector", None), name, None)
        return method(message_id) if callable(method) else None

    def get_message_status(self, call: ActionCall) -> str:
        message_id = str(call.parameters.get("messageId") or "").strip().strip('"')
        status = self._connector("message_status", message_id)
        if status:
            return str(status)
        execution: Execution | None = self.dmf.executions.by_message(message_id)
        if execution is None:
            raise bad_request(f"The message details for the message ID '{message_id}' were not found.")
        return execution.message_status()

    def get_execution_id_by_message_id(self, call: ActionCall) -> str:
        message_id = str(call.parameters.get("_messageId") or "").strip().strip('"')
        found = self._connector("execution_id_for_message", message_id)
        if found:
            return str(found)
        execution = self.dmf.executions.by_message(message_id)
        return execution.id if execution is not None else EMPTY_GUID

    # --- registration -------------------------------------------------------------------------------------

    def actions(self) -> list[Action]:
        string: list[tuple[str, Callable[[ActionCall], Any], tuple[ActionParameter, ...]]] = [
            ("GetAzureWriteUrl", self.get_azure_write_url, (_p("uniqueFileName"),)),
            ("ImportFromPackage", self.import_from_package, _IMPORT_PARAMS),
            ("ImportFromPackageAsync", self.import_from_package, _IMPORT_PARAMS),
            ("ExportToPackage", self.export_to_package, _EXPORT_PARAMS),
            ("ExportToPackageAsync", self.export_to_package, (*_EXPORT_PARAMS, _p("entityList"))),
            (
                "ExportToPackagePreview",
                self.export_preview,
                (*_EXPORT_PARAMS, _p("count", _I), _p("exportPreviewCount", _I)),
            ),
            (
                "ExportToPackagePreviewAsync",
                self.export_preview,
                (*_EXPORT_PARAMS, _p("count", _I), _p("exportPreviewCount", _I)),
            ),
            ("ExportFromPackage", self.export_from_package, _IMPORT_PARAMS),
            ("GetExportedPackageUrl", self.get_exported_package_url, _EXECUTION),
            ("GetExecutionSummaryStatus", self.get_execution_summary_status, _EXECUTION),
            ("GetEntityExecutionSummaryStatusList", self.get_entity_status_list, _EXECUTION),
            ("GetExecutionErrors", self.get_execution_errors, _EXECUTION),
            ("GetImportStagingErrorFileUrl", self.get_staging_error_file_url, _EXECUTION_ENTITY),
            ("GetImportTargetErrorKeysFileUrl", self.get_error_keys_file_url, _EXECUTION_ENTITY),
            ("GetExecutionSummaryPageUrl", self.get_summary_page_url, _EXECUTION),
            ("GetMessageStatus", self.get_message_status, (_p("messageId", required=True),)),
            (
                "GetExecutionIdByMessageId",
                self.get_execution_id_by_message_id,
                (_p("_messageId", required=True),),
            ),
        ]
        actions = [Action(n, h, parameters=p, return_type=_S, bound_set=SET) for n, h, p in string]
        actions.append(
            Action(
                "GenerateImportTargetErrorKeysFile",
                self.generate_error_keys_file,
                parameters=_EXECUTION_ENTITY,
                return_type=_B,
                bound_set=SET,
            )
        )
        actions.append(
            Action(
                "DeleteExecutionHistoryJob",
                self.delete_execution_history,
                parameters=_EXECUTION,
                bound_set=SET,
            )
        )
        return actions


def register_actions(state: Any) -> None:
    api = PackageApi(state)
    for action in api.actions():
        state.odata.actions.register(action)
