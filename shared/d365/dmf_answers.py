"""Decoding of DMF package-API answers (ref §3.2), kept apart from the client so it is easy to test.

D365 returns JSON *inside a string* for ``GetAzureWriteUrl`` and ``GetExecutionErrors``; Microsoft's docs show
some values nested (``{"value": {"value": x}}``) where its code reads them flat; an empty GUID means "no
job"; and ``GetExecutionErrors`` messages may hold unescaped quotes and line breaks (third-party report).
Every parser here accepts all of these.
"""

from __future__ import annotations

import enum
import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from shared.d365.errors import D365Error
from shared.redact import redact_text, redact_url

__all__ = [
    "EMPTY_GUID",
    "DmfActionError",
    "ExecutionError",
    "StatusReading",
    "WriteUrl",
    "as_text",
    "is_empty_id",
    "optional_url",
    "parse_execution_errors",
    "parse_execution_id",
    "parse_write_url",
]

logger = logging.getLogger(__name__)

EMPTY_GUID = "00000000-0000-0000-0000-000000000000"

S = TypeVar("S", bound=enum.Enum)


class DmfActionError(D365Error):
    """A DMF action answered 2xx but with a result that means failure (empty execution id, bad shape)."""


@dataclass(frozen=True, repr=False)
class WriteUrl:
    """``GetAzureWriteUrl``'s answer: the blob id and its SAS URL (``repr``/``str`` hide the signature)."""

    blob_id: str
    blob_url: str

    def __repr__(self) -> str:
        return f"WriteUrl(blob_id={self.blob_id!r}, blob_url={redact_url(self.blob_url)!r})"

    __str__ = __repr__


@dataclass(frozen=True)
class ExecutionError:
    """One row of ``GetExecutionErrors`` (``RecordId``, ``Field``, ``ErrorMessage``)."""

    record_id: str
    field: str
    message: str


@dataclass(frozen=True)
class StatusReading(Generic[S]):
    """A parsed status and the exact text D365 sent (kept when it was not a known value)."""

    status: S
    raw: str


def _unwrap(value: Any) -> Any:
    """The inner value of a documented-but-unused nesting ``{"value": x}`` (ref §3.2 ExportToPackage)."""
    while isinstance(value, Mapping) and "value" in value:
        value = value["value"]
    return value


def as_text(value: Any) -> str:
    value = _unwrap(value)
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value).strip()


def is_empty_id(text: str) -> bool:
    return not text.strip('{}" ') or text.strip('{}" ').lower() == EMPTY_GUID


def optional_url(value: Any) -> str | None:
    text = as_text(value)
    return text or None


def _loads_maybe(value: Any) -> Any:
    """``value`` decoded once more when it is a string holding JSON (ref §3.2 double encoding)."""
    value = _unwrap(value)
    if isinstance(value, str):
        text = value.strip().lstrip("\ufeff")
        if text[:1] in ("{", "[", '"'):
            return json.loads(text)
    return value


def _field(data: Mapping[str, Any], name: str) -> Any:
    """A key of a D365 object, compared case-insensitively."""
    wanted = name.lower()
    for key, value in data.items():
        if str(key).lower() == wanted:
            return value
    return None


# -- GetExecutionErrors: JSON array in a string, messages possibly holding unescaped quotes or line breaks

_KEY_RE = re.compile(r'"(RecordId|Field|ErrorMessage)"\s*:\s*', re.IGNORECASE)
_OBJECT_SPLIT = re.compile(r'\}\s*,\s*\{(?=\s*"(?:RecordId|Field|ErrorMessage)"\s*:)', re.IGNORECASE)


def _error_from_mapping(row: Mapping[str, Any]) -> ExecutionError:
    def text(name: str) -> str:
        value = _field(row, name)
        return "" if value is None else str(value)

    return ExecutionError(record_id=text("RecordId"), field=text("Field"), message=text("ErrorMessage"))


def _lenient_value(raw: str) -> str:
    """One value cut out of broken JSON: outer quotes and separators removed, common escapes undone."""
    text = raw.strip().rstrip(",").strip()
    if len(text) >= 2 and text[0] == '"' and text[-1] == '"':
        text = text[1:-1]
    elif text.lower() == "null":
        return ""
    return text.replace('\\"', '"').replace("\\n", "\n").replace("\\r", "\r").replace("\\\\", "\\")


def _lenient_errors(text: str) -> list[ExecutionError]:
    """Recover rows from almost-JSON: split on ``},{"Key"`` and cut each value at the next known key."""
    body = text.strip()
    body = body.removeprefix("[").removesuffix("]").strip()
    body = body.removeprefix("{").removesuffix("}")
    rows: list[ExecutionError] = []
    for chunk in _OBJECT_SPLIT.split(body):
        matches = list(_KEY_RE.finditer(chunk))
        if not matches:
            continue
        values: dict[str, str] = {}
        for i, match in enumerate(matches):
            end = matches[i + 1].start() if i + 1 < len(matches) else len(chunk)
            values[match.group(1).lower()] = _lenient_value(chunk[match.end() : end])
        rows.append(
            ExecutionError(
                record_id=values.get("recordid", ""),
                field=values.get("field", ""),
                message=values.get("errormessage", ""),
            )
        )
    return rows


def parse_execution_errors(value: Any) -> list[ExecutionError]:
    """Rows of a ``GetExecutionErrors`` value (string or decoded); never raises (see ``execution_errors``)."""
    value = _unwrap(value)
    if value is None or (isinstance(value, str) and not value.strip()):
        return []
    try:
        decoded = _loads_maybe(value)
    except ValueError:
        decoded = None
    if isinstance(decoded, Mapping):
        decoded = [decoded]
    if isinstance(decoded, list) and all(isinstance(row, Mapping) for row in decoded):
        return [_error_from_mapping(row) for row in decoded]
    raw = value if isinstance(value, str) else json.dumps(value, default=str)
    rows = _lenient_errors(raw) if decoded is None else []
    if rows:
        return rows
    logger.warning("GetExecutionErrors answer could not be parsed; kept as one raw error")
    return [ExecutionError(record_id="", field="", message=raw.strip())]


def parse_write_url(value: Any) -> WriteUrl:
    """``GetAzureWriteUrl``'s value: JSON in a string (ref §3.2), or already an object; keys any case."""
    try:
        decoded = _loads_maybe(value)
    except ValueError:
        decoded = None
    url = _field(decoded, "BlobUrl") if isinstance(decoded, Mapping) else None
    if not isinstance(url, str) or not url.startswith(("https://", "http://")):
        raise DmfActionError(
            f"GetAzureWriteUrl answered no usable BlobUrl: {redact_text(str(value))[:300]!r}"
        )
    blob_id = _field(decoded, "BlobId") if isinstance(decoded, Mapping) else None
    return WriteUrl(blob_id=str(blob_id or ""), blob_url=url)


def parse_execution_id(action: str, value: Any, requested: str) -> str:
    """The execution id a job action answered; the empty GUID (or nothing) raises ``DmfActionError``.

    Microsoft's code reads a flat string and treats the empty GUID as failure; the doc shows it nested in
    ``{"value": ...}`` (ref §3.2): both are accepted.
    """
    text = as_text(value).strip('"')
    if is_empty_id(text):
        raise DmfActionError(
            f"{action} answered an empty execution id ({text or 'nothing'!r}): D365 did not start the "
            f"job (requested id {requested!r}); check the data project and the execution history in F&O"
        )
    return text
