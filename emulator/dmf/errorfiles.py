"""The error files of an import, stored in the ``dmf`` container and handed out as SAS URLs (ref §3.2).

- Staging error file (GetImportStagingErrorFileUrl): the source rows that did not reach staging, with
  their columns as in the file plus ``ERRORMESSAGE``.
- Error keys file (GenerateImportTargetErrorKeysFile, then GetImportTargetErrorKeysFileUrl): the keys (staging
  field names) of the staged rows the target refused.
Both are CSV, UTF-8 with BOM and CRLF: D365's exact layout of these files is UNCONFIRMED.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from emulator.dmf.datafiles import CSV, write_data_file
from emulator.dmf.model import DmfError, EntityExecution, Execution
from emulator.dmf.staging import StagingFailure

_UNSAFE = re.compile(r"[\\/?#%\x00-\x1f]")


def safe_name(text: str) -> str:
    return _UNSAFE.sub("_", text).strip() or "_"


def _store(state: Any, execution: Execution, name: str, data: bytes) -> str | None:
    try:
        state.dmf.blobs.upload(name, data, "text/csv")
    except DmfError as exc:
        execution.note(f"The file {name} could not be stored: {exc.message}")
        return None
    return name


def upload_staging_errors(
    state: Any,
    execution: Execution,
    progress: EntityExecution,
    columns: Sequence[str],
    failures: Sequence[StagingFailure],
) -> str | None:
    header = [*columns, "ERRORMESSAGE"]
    rows = [
        [f.source.get(c, "") for c in columns] + [" ".join(text.replace("\n", " ") for _, text in f.problems)]
        for f in failures
    ]
    name = f"errors/{safe_name(execution.id)}/{safe_name(progress.entity_name)}-staging-errors.csv"
    return _store(state, execution, name, write_data_file(CSV, "", "", header, rows))


def error_keys_blob(state: Any, execution: Execution, progress: EntityExecution) -> str | None:
    """The error-keys file of one entity (built once); None when the target refused no row."""
    if not progress.error_keys:
        return None
    if progress.error_keys_blob is None:
        name = f"errors/{safe_name(execution.id)}/{safe_name(progress.entity_name)}-error-keys.csv"
        data = write_data_file(CSV, "", "", list(progress.key_fields), [list(k) for k in progress.error_keys])
        progress.error_keys_blob = _store(state, execution, name, data)
    return progress.error_keys_blob
