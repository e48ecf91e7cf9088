"""Client for the DMF package REST API (ref §3): upload a package, import/export it, poll, fetch errors.

Every action is ``POST /data/DataManagementDefinitionGroups/Microsoft.Dynamics.DataEntities.{Action}``
through ``ODataClient.call_action`` (so through the one transport and its retry policy). Reads (status,
URLs, errors) are marked idempotent and retried; ``ImportFromPackage`` / ``ExportToPackage`` are not (a
retry after D365 received them could start a second job) — except on 429 / connect failures, which the
transport retries for any request. Microsoft says ``ImportFromPackage`` must not run in parallel (ref §3.1):
serialising calls across instances is the caller's job (a blob lease), not this client's.

Quirks handled (ref §3.2, §9; the decoding lives in ``dmf_answers``): ``GetAzureWriteUrl`` and
``GetExecutionErrors`` return JSON *inside a string*; ``ExportToPackage`` / ``GetExportedPackageUrl`` are
documented nested (``{"value": {"value": x}}``) but Microsoft's code reads them flat — both are accepted;
an empty GUID means failure / "not yet"; URL actions return ``""`` until ready.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import IO, Any, TypeVar

from shared.d365.dmf_answers import (
    EMPTY_GUID,
    DmfActionError,
    ExecutionError,
    StatusReading,
    WriteUrl,
    as_text,
    is_empty_id,
    optional_url,
    parse_execution_errors,
    parse_execution_id,
    parse_write_url,
)
from shared.d365.dmf_status import ExecutionStatus, MessageStatus
from shared.d365.errors import D365ClientError, D365Error
from shared.d365.odata import ODataClient
from shared.d365.sas_blob import (
    DEFAULT_BLOCK_SIZE,
    DEFAULT_CHUNK_SIZE,
    DEFAULT_MAX_SINGLE_PUT,
    UploadResult,
    download_to,
    upload_blob,
)
from shared.d365.transport import D365Transport

__all__ = [
    "DEFINITION_GROUPS",
    "EMPTY_GUID",
    "DmfActionError",
    "DmfClient",
    "ExecutionError",
    "ExecutionStatus",
    "MessageStatus",
    "PollTimeoutError",
    "Poller",
    "StatusReading",
    "WriteUrl",
    "parse_execution_errors",
    "parse_execution_id",
    "parse_write_url",
]

logger = logging.getLogger(__name__)

DEFINITION_GROUPS = "DataManagementDefinitionGroups"

T = TypeVar("T")


class PollTimeoutError(D365Error):
    """A poll loop ran out of attempts before the awaited state; ``last`` holds the last value seen."""

    def __init__(self, message: str, *, last: object = None) -> None:
        super().__init__(message)
        self.last = last


@dataclass(frozen=True)
class Poller:
    """Bounded polling: ``max_attempts`` reads, ``interval`` seconds apart, with an injectable ``sleep``."""

    interval: float = 5.0
    max_attempts: int = 120
    sleep: Callable[[float], None] | None = None  # None = time.sleep

    def until(self, read: Callable[[], T], done: Callable[[T], bool], *, what: str = "condition") -> T:
        """Call ``read`` until ``done(value)``; return that value or raise ``PollTimeoutError``."""
        pause = self.sleep or time.sleep
        value: T | None = None
        for attempt in range(1, max(1, self.max_attempts) + 1):
            value = read()
            if done(value):
                return value
            if attempt < self.max_attempts:
                pause(self.interval)
        raise PollTimeoutError(
            f"{what}: not reached after {self.max_attempts} attempts {self.interval:g}s apart", last=value
        )


class DmfClient:
    """The package API on one ``ODataClient`` (actions) and ``D365Transport`` (SAS blob transfers)."""

    def __init__(self, odata: ODataClient, transport: D365Transport) -> None:
        self._odata = odata
        self._transport = transport

    def _call(
        self, action: str, parameters: Mapping[str, Any], *, idempotent: bool, timeout: float | None = None
    ) -> Any:
        return self._odata.call_action(
            DEFINITION_GROUPS, action, parameters=parameters, idempotent=idempotent, timeout=timeout
        )

    # ---------------------------------------------------------------------------------------- upload

    def get_azure_write_url(self, unique_file_name: str) -> WriteUrl:
        """``GetAzureWriteUrl``: a SAS URL to upload a package to (value is JSON in a string; an object too).

        Idempotent enough to retry: a repeat only hands out another URL for the same unique name.
        """
        value = self._call("GetAzureWriteUrl", {"uniqueFileName": unique_file_name}, idempotent=True)
        return parse_write_url(value)

    def upload_package(
        self,
        url: WriteUrl | str,
        source: IO[bytes] | Iterable[bytes] | bytes,
        *,
        length: int | None = None,
        block_size: int = DEFAULT_BLOCK_SIZE,
        max_single_put: int = DEFAULT_MAX_SINGLE_PUT,
        max_concurrency: int = 2,
    ) -> UploadResult:
        """Stream the package to the SAS URL (Put Blob or blocks by size and ``sv``; see ``sas_blob``)."""
        target = url.blob_url if isinstance(url, WriteUrl) else url
        return upload_blob(
            self._transport,
            target,
            source,
            length=length,
            block_size=block_size,
            max_single_put=max_single_put,
            max_concurrency=max_concurrency,
            content_type="application/zip",
        )

    # ---------------------------------------------------------------------------------------- jobs

    def import_from_package(
        self,
        package_url: str,
        definition_group_id: str,
        execution_id: str,
        *,
        execute: bool = True,
        overwrite: bool = True,
        legal_entity_id: str = "",
        timeout: float | None = None,
    ) -> str:
        """``ImportFromPackage``; returns the execution id D365 answered (normally ``execution_id``).

        Not retried after D365 may have received it. On a timeout or dropped connection the import may
        still run server-side (ref §3.4, third-party): poll ``execution_status(execution_id)`` with the id
        you supplied rather than sending again. ``timeout`` overrides the policy's total deadline (the
        per-attempt read timeout of the transport still applies).
        """
        parameters = {
            "packageUrl": package_url,
            "definitionGroupId": definition_group_id,
            "executionId": execution_id,
            "execute": execute,
            "overwrite": overwrite,
            "legalEntityId": legal_entity_id,
        }
        value = self._call("ImportFromPackage", parameters, idempotent=False, timeout=timeout)
        return parse_execution_id("ImportFromPackage", value, execution_id)

    def export_to_package(
        self,
        definition_group_id: str,
        package_name: str,
        execution_id: str,
        *,
        re_execute: bool = False,
        legal_entity_id: str = "",
    ) -> str:
        """``ExportToPackage``; returns the execution id (flat or nested answer; empty GUID raises)."""
        parameters = {
            "definitionGroupId": definition_group_id,
            "packageName": package_name,
            "executionId": execution_id,
            "reExecute": re_execute,
            "legalEntityId": legal_entity_id,
        }
        value = self._call("ExportToPackage", parameters, idempotent=False)
        return parse_execution_id("ExportToPackage", value, execution_id)

    # ---------------------------------------------------------------------------------------- status

    def execution_status(self, execution_id: str) -> ExecutionStatus:
        """``GetExecutionSummaryStatus`` (idempotent, retried); unknown text gives ``UNKNOWN``."""
        return self.read_execution_status(execution_id).status

    def read_execution_status(self, execution_id: str) -> StatusReading[ExecutionStatus]:
        """Like :meth:`execution_status`, keeping the raw text D365 sent."""
        raw = as_text(self._call("GetExecutionSummaryStatus", {"executionId": execution_id}, idempotent=True))
        status = ExecutionStatus.parse(raw)
        if status is ExecutionStatus.UNKNOWN and raw.lower() != "unknown":
            logger.warning(
                "GetExecutionSummaryStatus(%s) answered an unknown status %r", execution_id, raw[:100]
            )
        return StatusReading(status, raw)

    def wait_for_execution(
        self, execution_id: str, poller: Poller | None = None, *, not_found_attempts: int = 3
    ) -> ExecutionStatus:
        """Poll ``GetExecutionSummaryStatus`` until a final status; ``PollTimeoutError`` after the attempts.

        A 400 right after the job was started (the execution row does not exist yet, ref §1.7, §3.4) counts
        as "not yet" for the first ``not_found_attempts`` reads.
        """
        misses = 0

        def read() -> ExecutionStatus:
            nonlocal misses
            try:
                return self.execution_status(execution_id)
            except D365ClientError as exc:
                misses += 1
                if exc.status_code != 400 or misses > not_found_attempts:
                    raise
                return ExecutionStatus.NOT_RUN

        return (poller or Poller()).until(read, lambda s: s.final, what=f"execution {execution_id} to finish")

    def exported_package_url(self, execution_id: str) -> str | None:
        """``GetExportedPackageUrl``: the SAS URL of the exported zip, or None while not ready ("")."""
        return optional_url(
            self._call("GetExportedPackageUrl", {"executionId": execution_id}, idempotent=True)
        )

    def wait_for_exported_package_url(self, execution_id: str, poller: Poller | None = None) -> str:
        """Poll ``GetExportedPackageUrl`` until it is non-empty."""
        url = (poller or Poller()).until(
            lambda: self.exported_package_url(execution_id),
            lambda u: u is not None,
            what=f"exported package URL of {execution_id}",
        )
        assert url is not None
        return url

    # ---------------------------------------------------------------------------------------- errors

    def execution_errors(self, execution_id: str) -> list[ExecutionError]:
        """``GetExecutionErrors``: the rows of the JSON array in the string value, parsed tolerantly.

        D365 may leave quotes and line breaks unescaped in messages (ref §3.2): a lenient scanner recovers
        the rows; if even that fails, one ``ExecutionError`` holds the raw text. Never raises on bad JSON.
        """
        return parse_execution_errors(
            self._call("GetExecutionErrors", {"executionId": execution_id}, idempotent=True)
        )

    def generate_target_error_keys_file(self, execution_id: str, entity_name: str) -> bool:
        """``GenerateImportTargetErrorKeysFile``: True when errors exist (then poll the URL)."""
        value = self._call(
            "GenerateImportTargetErrorKeysFile",
            {"executionId": execution_id, "entityName": entity_name},
            idempotent=True,
        )
        return as_text(value).lower() in ("true", "1", "yes")

    def target_error_keys_file_url(self, execution_id: str, entity_name: str) -> str | None:
        """``GetImportTargetErrorKeysFileUrl``: the URL, or None while generating / without errors."""
        return optional_url(
            self._call(
                "GetImportTargetErrorKeysFileUrl",
                {"executionId": execution_id, "entityName": entity_name},
                idempotent=True,
            )
        )

    def wait_for_target_error_keys_file_url(
        self, execution_id: str, entity_name: str, poller: Poller | None = None
    ) -> str | None:
        """Generate the error-keys file and poll for its URL (bounded, unlike RIS); None without errors."""
        if not self.generate_target_error_keys_file(execution_id, entity_name):
            return None
        return (poller or Poller(interval=2.0, max_attempts=30)).until(
            lambda: self.target_error_keys_file_url(execution_id, entity_name),
            lambda u: u is not None,
            what=f"error-keys file of {entity_name!r} in {execution_id}",
        )

    def staging_error_file_url(self, execution_id: str, entity_name: str) -> str | None:
        """``GetImportStagingErrorFileUrl``: the source→staging error file URL, or None."""
        return optional_url(
            self._call(
                "GetImportStagingErrorFileUrl",
                {"executionId": execution_id, "entityName": entity_name},
                idempotent=True,
            )
        )

    def execution_summary_page_url(self, execution_id: str) -> str | None:
        """``GetExecutionSummaryPageUrl``: the link to the job's page in F&O, or None."""
        return optional_url(
            self._call("GetExecutionSummaryPageUrl", {"executionId": execution_id}, idempotent=True)
        )

    # ---------------------------------------------------------------------------------------- messages

    def message_status(self, message_id: str) -> MessageStatus:
        """``GetMessageStatus`` of a recurring-integrations message (both spellings of ref §4.4)."""
        return self.read_message_status(message_id).status

    def read_message_status(self, message_id: str) -> StatusReading[MessageStatus]:
        """Like :meth:`message_status`, keeping the raw text."""
        raw = as_text(self._call("GetMessageStatus", {"messageId": message_id}, idempotent=True))
        status = MessageStatus.parse(raw)
        if status is MessageStatus.UNKNOWN and raw.lower() != "unknown":
            logger.warning("GetMessageStatus(%s) answered an unknown status %r", message_id, raw[:100])
        return StatusReading(status, raw)

    def execution_id_for_message(self, message_id: str) -> str | None:
        """``GetExecutionIdByMessageId`` (parameter ``_messageId``); None while not picked up (empty GUID)."""
        text = as_text(self._call("GetExecutionIdByMessageId", {"_messageId": message_id}, idempotent=True))
        text = text.strip('"')
        return None if is_empty_id(text) else text

    # ---------------------------------------------------------------------------------------- download

    def download(self, url: str, sink: IO[bytes], *, chunk_size: int = DEFAULT_CHUNK_SIZE) -> int:
        """Stream a SAS URL (exported package, error file) into ``sink`` without the token; resumes drops."""
        return download_to(self._transport, url, sink, authenticate=False, chunk_size=chunk_size)
