"""Client for the recurring-integrations connector API (ref §4): enqueue, dequeue, download, ack, jobstatus.

* ``enqueue`` is NOT idempotent: D365 would queue the file twice. The transport retries it only when
  nothing can have been processed (429, failure to connect); a file body must be seekable for that, an
  iterator body is never resent. A 413 becomes :class:`EnqueueTooLargeError` (route big payloads through the
  package API instead, peers §5).
* ``dequeue`` hands out a message that becomes visible again 30 minutes later unless acked (ref §4.1), so
  the caller must expect the same message twice. ``ack`` posts the exact dequeue body back (ref §4.2) and
  is retried: acking twice is harmless (D365 behaviour UNCONFIRMED; the local emulator answers 200 again).
* ``download`` follows ``DownloadLocation`` with the bearer token. D365 behind its load balancer returns
  ``http://`` there (ref §4.2). A location on the environment's own host, or on the connector's download
  path (``/api/connector/download/...``, ref §4.2), is rebased onto the configured environment URL: that
  fixes the scheme and drops ``:80`` (what RIS and d365fo.integrations do), keeps the local emulator's plain
  HTTP, and the token can only ever go to the environment. Any other location gets the plain
  https rewrite (loopback hosts excepted) and is refused unless it then is the environment's origin.
"""

from __future__ import annotations

import enum
import ipaddress
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import IO, Any
from urllib.parse import quote, urlsplit, urlunsplit

import requests

from shared.d365.errors import D365ClientError, D365Error
from shared.d365.sas_blob import DEFAULT_CHUNK_SIZE, download_to
from shared.d365.transport import D365Transport
from shared.redact import redact_text

__all__ = [
    "ConnectorClient",
    "ConnectorResponseError",
    "DataJobState",
    "DequeuedMessage",
    "EnqueueTooLargeError",
    "EntityExecutionDetail",
    "JobStatus",
    "download_url",
    "https_download_url",
    "parse_job_status",
]


class EnqueueTooLargeError(D365ClientError):
    """413 from enqueue: the payload is over the connector's size limit (peers §5: ~50 MB was refused)."""


class ConnectorResponseError(D365Error):
    """The connector answered 2xx with a body this client cannot use (no message id, bad dequeue JSON)."""


_NOISE = re.compile(r"[\s_\-.\"']+")


def _key(text: object) -> str:
    return _NOISE.sub("", str(text)).lower()


class DataJobState(enum.StrEnum):
    """``DataJobState`` of ``/api/connector/jobstatus`` (ref §4.3): names or their integer values."""

    ENQUEUED = "Enqueued"
    DEQUEUED = "Dequeued"
    DOWNLOADED = "Downloaded"
    ACKED = "Acked"
    IN_PROCESS = "InProcess"
    PROCESSED = "Processed"
    PROCESSED_WITH_ERRORS = "ProcessedWithErrors"
    POST_PROCESS_ERROR = "PostProcessError"
    PRE_PROCESS_ERROR = "PreProcessError"
    UNKNOWN = "Unknown"

    @classmethod
    def parse(cls, value: object) -> DataJobState:
        """A name (any case/spacing, both ``PostProcessError``/``PostProcessingError`` spellings) or an int.

        Whether D365 sends names or integers is UNCONFIRMED (ref §4.3; RIS's converter accepts both).
        """
        if isinstance(value, int) and not isinstance(value, bool):
            return _JOB_STATES_BY_NUMBER.get(value, cls.UNKNOWN)
        key = _key(value)
        if key.isdigit():
            return _JOB_STATES_BY_NUMBER.get(int(key), cls.UNKNOWN)
        return _JOB_STATES_BY_KEY.get(key, cls.UNKNOWN)

    @property
    def final(self) -> bool:
        """Processing ended (RIS: Processed succeeds; the three error states fail, ref §4.3)."""
        return self in (
            DataJobState.PROCESSED,
            DataJobState.PROCESSED_WITH_ERRORS,
            DataJobState.POST_PROCESS_ERROR,
            DataJobState.PRE_PROCESS_ERROR,
        )

    @property
    def succeeded(self) -> bool:
        return self is DataJobState.PROCESSED


_JOB_STATES_BY_NUMBER = dict(enumerate(list(DataJobState)[:9]))  # Enqueued=0 ... PreProcessError=8
_JOB_STATES_BY_KEY = {_key(s.value): s for s in DataJobState} | {
    "postprocessingerror": DataJobState.POST_PROCESS_ERROR,
    "preprocessingerror": DataJobState.PRE_PROCESS_ERROR,
    "postprocessingfailed": DataJobState.POST_PROCESS_ERROR,
    "processing": DataJobState.IN_PROCESS,
}


@dataclass(frozen=True, repr=False)
class DequeuedMessage:
    """One dequeued export message; ``raw`` is the exact dequeue body, posted back verbatim by ``ack``."""

    correlation_id: str
    pop_receipt: str
    download_location: str
    last_dequeued: str | None
    raw: bytes

    def __repr__(self) -> str:
        return (
            f"DequeuedMessage(correlation_id={self.correlation_id!r}, last_dequeued={self.last_dequeued!r})"
        )


@dataclass(frozen=True)
class EntityExecutionDetail:
    """One ``ExecutionDetail`` row of a job status (states kept as D365 sent them)."""

    entity_name: str
    company: str
    staging_records: int | None
    staging_status: str
    staging_error_count: int | None
    target_records: int | None
    target_status: str
    target_error_count: int | None


@dataclass(frozen=True)
class JobStatus:
    """``/api/connector/jobstatus`` answer (ref §4.3); ``raw`` is the whole decoded JSON."""

    state: DataJobState
    execution_id: str | None
    details: list[EntityExecutionDetail] = field(default_factory=list)
    execution_log: str = ""
    raw: dict[str, Any] = field(default_factory=dict)


def _is_loopback(host: str | None) -> bool:
    if not host:
        return False
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def https_download_url(url: str) -> str:
    """Rewrite ``http://host[:80]/...`` to ``https://host/...`` unless ``host`` is loopback (ref §4.2).

    D365 behind its load balancer hands out ``http://`` download locations; RIS and d365fo.integrations
    force https the same way. A loopback host is the local emulator, which serves plain HTTP.
    """
    parts = urlsplit(url)
    if parts.scheme.lower() != "http" or _is_loopback(parts.hostname):
        return url
    netloc = parts.netloc
    if parts.port == 80:
        netloc = netloc.rsplit(":", 1)[0]
    return urlunsplit(("https", netloc, parts.path, parts.query, parts.fragment))


_DOWNLOAD_PATH = "/api/connector/download/"


def download_url(location: str, base_url: str) -> str:
    """Where to GET a ``DownloadLocation`` with the token (see the module doc); raises for foreign hosts."""
    parts, base = urlsplit(location), urlsplit(base_url)
    same_host = (parts.hostname or "").lower() == (base.hostname or "").lower()
    if same_host or parts.path.lower().startswith(_DOWNLOAD_PATH):
        return urlunsplit((base.scheme, base.netloc, parts.path, parts.query, ""))
    url = https_download_url(location)
    fixed = urlsplit(url)
    if (fixed.scheme, fixed.netloc.lower()) != (base.scheme, base.netloc.lower()):
        raise ConnectorResponseError(
            f"DownloadLocation points at {fixed.scheme}://{fixed.netloc}, not the D365 environment "
            f"{base.scheme}://{base.netloc}: the D365 token is not sent there"
        )
    return url


def _path_part(value: str) -> str:
    if not value.strip():
        raise ValueError("activity id must not be empty")
    return quote(value.strip(), safe="{}-")


def _decode_json(content: bytes) -> Any:
    return json.loads(content.decode("utf-8-sig"))


def _message_id(content: bytes) -> str:
    """The enqueue answer: a JSON string literal (``"guid"``), ``{"value": "guid"}`` or bare text.

    Microsoft code strips the quotes of the raw body; one third-party doc shows the object form
    (ref §4.2, UNCONFIRMED): both are accepted.
    """
    text = content.decode("utf-8-sig", errors="replace").strip()
    try:
        value: Any = json.loads(text)
    except ValueError:
        value = text
    while isinstance(value, Mapping):
        value = next((v for k, v in value.items() if str(k).lower() in ("value", "messageid")), None)
    message_id = str(value or "").strip().strip('"').strip()
    if not message_id:
        raise ConnectorResponseError(f"enqueue answered no message id: {redact_text(text)[:200]!r}")
    return message_id


def _get(data: Mapping[str, Any], *names: str) -> Any:
    """The first of ``names`` present in ``data``, compared case-insensitively."""
    lowered = {str(k).lower(): v for k, v in data.items()}
    for name in names:
        if name.lower() in lowered:
            return lowered[name.lower()]
    return None


def _optional_int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _state_text(value: Any) -> str:
    return "" if value is None else str(value)


def parse_job_status(data: Any) -> JobStatus:
    """Parse a ``DataJobStatusDetail`` (ref §4.3), flat or nested, names or ints; unknown bits tolerated."""
    if not isinstance(data, Mapping):
        raise ConnectorResponseError(f"jobstatus answered {type(data).__name__}, expected a JSON object")
    job = _get(data, "DataJobStatus")
    job = job if isinstance(job, Mapping) else data
    rows = _get(data, "ExecutionDetail", "ExecutionDetails") or []
    details = [
        EntityExecutionDetail(
            entity_name=str(_get(row, "EntityName") or ""),
            company=str(_get(row, "Company") or ""),
            staging_records=_optional_int(_get(row, "StagingRecords")),
            staging_status=_state_text(_get(row, "StagingStatus")),
            staging_error_count=_optional_int(_get(row, "StagingErrorCount")),
            target_records=_optional_int(_get(row, "TargetRecords")),
            target_status=_state_text(_get(row, "TargetStatus")),
            target_error_count=_optional_int(_get(row, "TargetErrorCount")),
        )
        for row in (rows if isinstance(rows, list) else [])
        if isinstance(row, Mapping)
    ]
    execution_id = _get(job, "ExecutionIdentifier", "ExecutionId")
    return JobStatus(
        state=DataJobState.parse(_get(job, "DataJobState", "State")),
        execution_id=str(execution_id) if execution_id else None,
        details=details,
        execution_log=str(_get(data, "ExecutionLog") or ""),
        raw=dict(data),
    )


class ConnectorClient:
    """``/api/connector/{enqueue,dequeue,ack,jobstatus}/{activityId}`` on one ``D365Transport``."""

    def __init__(self, transport: D365Transport) -> None:
        self._transport = transport

    def enqueue(
        self,
        activity_id: str,
        body: bytes | IO[bytes],
        *,
        entity: str | None = None,
        company: str | None = None,
        external_id: str | None = None,
        content_type: str = "application/octet-stream",
    ) -> str:
        """POST the file/package; returns the message id (quotes stripped; ``{"value": ...}`` accepted).

        ``entity`` is required for File jobs and omitted for Data-package jobs; ``external_id`` goes to
        ``x-ms-dyn-externalidentifier`` (use the original file name, peers §5). Never retried once D365
        may have received it (only 429 and connect failures are, and only with a rewindable body).
        """
        params = {k: v for k, v in (("entity", entity), ("company", company)) if v}
        headers = {"Content-Type": content_type}
        if external_id:
            headers["x-ms-dyn-externalidentifier"] = external_id
        try:
            response = self._transport.request(
                "POST",
                f"/api/connector/enqueue/{_path_part(activity_id)}",
                params=params,
                data=body,
                headers=headers,
                idempotent=False,
            )
        except D365ClientError as exc:
            if exc.status_code != 413:
                raise
            raise EnqueueTooLargeError(
                "the recurring-integrations enqueue refused the payload as too large (HTTP 413); send big "
                "files through the DMF package API instead (upload to GetAzureWriteUrl + ImportFromPackage)",
                status_code=413,
                request_id=exc.request_id,
                url=exc.url,
                server_request_id=exc.server_request_id,
            ) from exc
        return _message_id(response.content)

    def dequeue(self, activity_id: str) -> DequeuedMessage | None:
        """GET the next export message; None on 204 (queue empty).

        The message comes back after 30 minutes unless acked (ref §4.1): callers must expect it twice.
        Retried like any GET: an answer lost on the way leaves that message hidden until its 30 minutes
        pass, then it is offered again (at-least-once either way).
        """
        response = self._transport.request(
            "GET", f"/api/connector/dequeue/{_path_part(activity_id)}", ok_statuses=(204,)
        )
        raw = response.content
        if response.status_code == 204 or not raw.strip():
            return None
        try:
            data = _decode_json(raw)
        except ValueError:
            raise ConnectorResponseError("dequeue answered a body that is not JSON") from None
        if not isinstance(data, Mapping):
            raise ConnectorResponseError("dequeue answered JSON that is not an object")
        location = _get(data, "DownloadLocation")
        if not isinstance(location, str) or not location:
            raise ConnectorResponseError("dequeue answered no DownloadLocation")
        last = _get(
            data, "LastDequeueDateTime", "LastDequeuedDateTime", "LastDequeueTime"
        )  # UNCONFIRMED name
        return DequeuedMessage(
            correlation_id=str(_get(data, "CorrelationId") or ""),
            pop_receipt=str(_get(data, "PopReceipt") or ""),
            download_location=location,
            last_dequeued=str(last) if last else None,
            raw=raw,
        )

    def download(self, message: DequeuedMessage, *, stream: bool = True) -> requests.Response:
        """GET ``DownloadLocation`` with the bearer token (https rewrite: module doc); the caller closes it.

        With ``stream=True`` a connection dropped mid-body is not retried: use :meth:`download_to`.
        """
        url = download_url(message.download_location, self._transport.base_url)
        return self._transport.request("GET", url, stream=stream)

    def download_to(
        self, message: DequeuedMessage, sink: IO[bytes], *, chunk_size: int = DEFAULT_CHUNK_SIZE
    ) -> int:
        """Stream the message's file into ``sink``, resuming after mid-body drops; returns the byte count."""
        url = download_url(message.download_location, self._transport.base_url)
        return download_to(self._transport, url, sink, authenticate=True, chunk_size=chunk_size)

    def ack(self, activity_id: str, message: DequeuedMessage) -> None:
        """POST the exact dequeue body to ``ack`` (retried: acking twice is harmless)."""
        self._transport.request(
            "POST",
            f"/api/connector/ack/{_path_part(activity_id)}",
            data=message.raw,
            headers={"Content-Type": "application/json"},
            idempotent=True,
        )

    def job_status(self, activity_id: str, message_id: str) -> JobStatus:
        """GET ``jobstatus?jobId=<message id>`` and parse it tolerantly (names or ints, nested or flat)."""
        response = self._transport.request(
            "GET",
            f"/api/connector/jobstatus/{_path_part(activity_id)}",
            params={"jobId": message_id.strip().strip('"')},
        )
        try:
            data = _decode_json(response.content)
        except ValueError:
            raise ConnectorResponseError("jobstatus answered a body that is not JSON") from None
        return parse_job_status(data)
