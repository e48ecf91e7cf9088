"""``POST /data/$batch``: OData 4.0 multipart/mixed batches with atomic changesets (ref §1.6).

Each part is run through the same ``ODataService.handle`` as a plain HTTP request. A changeset runs inside
one store transaction: the first failing operation rolls every operation of the changeset back, and the
changeset is answered with that single failing response (OData 4.0 §11.7.4). Operations outside changesets
are independent: a failure does not stop the ones after it (UNCONFIRMED for D365, which may honour
``Prefer: odata.continue-on-error``; we always continue). ``$<Content-ID>`` at the start of a URL refers to
the entity created by an earlier operation of the same changeset. JSON batches (OData 4.01) are UNCONFIRMED
for D365 and refused with 400. At most 5,000 operations per batch (ref §1.6, [S4]).
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, urlsplit

from emulator.odata.errors import ODataError, bad_request
from emulator.odata.messages import ODATA_VERSION, ODataRequest, ODataResponse

if TYPE_CHECKING:
    from emulator.odata.service import ODataService

MAX_OPERATIONS = 5_000
_BOUNDARY = re.compile(r'boundary\s*=\s*"?([^";]+)"?', re.IGNORECASE)
_MODIFYING = ("POST", "PUT", "PATCH", "DELETE", "MERGE")


@dataclass
class Operation:
    method: str
    url: str
    headers: dict[str, str]
    body: bytes
    content_id: str | None


@dataclass
class ChangeSet:
    operations: list[Operation] = field(default_factory=list)


class _Rollback(Exception):
    def __init__(self, response: ODataResponse, operation: Operation) -> None:
        super().__init__("changeset rolled back")
        self.response = response
        self.operation = operation


# --- parsing ---------------------------------------------------------------------------------------------


def boundary_of(content_type: str) -> str | None:
    match = _BOUNDARY.search(content_type)
    return match.group(1).strip() if match else None


def split_multipart(body: bytes, boundary: str) -> list[bytes]:
    """The encapsulated parts between ``--boundary`` delimiters (RFC 2046); preamble and epilogue dropped."""
    delimiter = re.compile(
        rb"(?:\A|\r?\n)--" + re.escape(boundary.encode("latin-1")) + rb"(--)?[ \t]*(?:\r?\n|\Z)"
    )
    parts: list[bytes] = []
    start: int | None = None
    closed = False
    for match in delimiter.finditer(body):
        if start is not None:
            parts.append(body[start : match.start()])
        if match.group(1):
            closed = True
            break
        start = match.end()
    if not closed:
        raise bad_request(
            "The batch request body is not a complete multipart/mixed message: the closing "
            f"delimiter '--{boundary}--' was not found."
        )
    return parts


def split_head(data: bytes) -> tuple[dict[str, str], bytes]:
    """Header lines up to the first blank line -> (lower-case header dict, rest)."""
    match = re.search(rb"\r?\n\r?\n", data)
    head, rest = (data[: match.start()], data[match.end() :]) if match else (data, b"")
    headers: dict[str, str] = {}
    for line in re.split(rb"\r?\n", head):
        name, sep, value = line.decode("utf-8", "replace").partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return headers, rest


def parse_operation(part: bytes) -> Operation:
    part_headers, payload = split_head(part)
    if not part_headers.get("content-type", "").lower().startswith("application/http"):
        raise bad_request("Each batch operation must be a part with 'Content-Type: application/http'.")
    payload = payload.lstrip(b"\r\n")
    line_end = re.search(rb"\r?\n", payload)
    request_line = (payload[: line_end.start()] if line_end else payload).decode("utf-8", "replace")
    rest = payload[line_end.end() :] if line_end else b""
    words = request_line.split()
    if len(words) < 2:
        raise bad_request(f"The batch operation request line '{request_line}' is not valid.")
    headers: dict[str, str] = {}
    if rest[:2] == b"\r\n" or rest[:1] == b"\n":  # no headers at all: the blank line comes first
        body = rest.lstrip(b"\r\n")
    else:
        headers, body = split_head(rest)
    return Operation(
        words[0].upper(), words[1], headers, body.rstrip(b"\r\n"), part_headers.get("content-id")
    )


def parse_batch(content_type: str, body: bytes) -> list[Operation | ChangeSet]:
    boundary = boundary_of(content_type)
    if boundary is None:
        raise bad_request("The batch request Content-Type must name a multipart boundary.")
    items: list[Operation | ChangeSet] = []
    for part in split_multipart(body, boundary):
        headers, payload = split_head(part)
        ctype = headers.get("content-type", "")
        if ctype.lower().startswith("multipart/mixed"):
            inner = boundary_of(ctype)
            if inner is None:
                raise bad_request("A changeset part must name its multipart boundary.")
            changeset = ChangeSet()
            for inner_part in split_multipart(b"\r\n" + payload, inner):
                inner_headers, _ = split_head(inner_part)
                if inner_headers.get("content-type", "").lower().startswith("multipart/"):
                    raise bad_request("A changeset cannot contain another changeset.")
                operation = parse_operation(inner_part)
                if operation.method not in _MODIFYING:
                    raise bad_request(
                        f"An invalid HTTP method '{operation.method}' was detected for a request in a "
                        "change set. Requests in change sets only support the HTTP methods 'POST', 'PUT', "
                        "'DELETE', and 'PATCH'."
                    )
                changeset.operations.append(operation)
            items.append(changeset)
        else:
            items.append(parse_operation(part))
    return items


# --- execution -------------------------------------------------------------------------------------------


def handle_batch(service: ODataService, request: ODataRequest) -> ODataResponse:
    content_type = request.header("content-type")
    if content_type.lower().startswith("application/json"):
        raise bad_request(
            "JSON batch requests (OData 4.01) are not supported; send the batch as multipart/mixed "
            "(OData 4.0)."
        )
    if not content_type.lower().startswith("multipart/mixed"):
        raise bad_request(f"The batch request must be sent as multipart/mixed, not '{content_type}'.")
    items = parse_batch(content_type, request.body)
    total = sum(len(i.operations) if isinstance(i, ChangeSet) else 1 for i in items)
    if total > MAX_OPERATIONS:
        raise bad_request(
            "The current batch message contains too many parts. Only batch messages with a maximum "
            f"number of '{MAX_OPERATIONS}' query operations and change sets are allowed "
            f"(this one has {total})."
        )
    boundary = f"batchresponse_{uuid.uuid4()}"
    out: list[bytes] = []
    for item in items:
        out.append(f"--{boundary}\r\n".encode())
        if isinstance(item, ChangeSet):
            out.append(_run_changeset(service, request, item))
        else:
            response = _run(service, request, item, {})
            out.append(_response_part(response, item.content_id))
    out.append(f"--{boundary}--\r\n".encode())
    return ODataResponse(
        200, [("Content-Type", f"multipart/mixed; boundary={boundary}"), ODATA_VERSION], b"".join(out)
    )


def _run_changeset(service: ODataService, request: ODataRequest, changeset: ChangeSet) -> bytes:
    created: dict[str, str] = {}  # Content-ID -> entity path below /data
    answered: list[tuple[Operation, ODataResponse]] = []
    try:
        with service.store.transaction():
            for operation in changeset.operations:
                response = _run(service, request, operation, created)
                if response.status >= 400:
                    raise _Rollback(response, operation)
                answered.append((operation, response))
                location = response.header("Location") or response.header("OData-EntityId")
                if operation.content_id and location and location.startswith(request.service_root + "/"):
                    created[operation.content_id] = location[len(request.service_root) + 1 :]
    except _Rollback as failed:
        return _response_part(failed.response, failed.operation.content_id)
    boundary = f"changesetresponse_{uuid.uuid4()}"
    out = [f"Content-Type: multipart/mixed; boundary={boundary}\r\n\r\n".encode()]
    for operation, response in answered:
        out.append(f"--{boundary}\r\n".encode())
        out.append(_response_part(response, operation.content_id))
    out.append(f"--{boundary}--\r\n".encode())
    return b"".join(out)


def _run(
    service: ODataService, request: ODataRequest, operation: Operation, created: dict[str, str]
) -> ODataResponse:
    try:
        sub = _sub_request(request, operation, created)
    except ODataError as exc:
        return exc.to_response()
    return service.handle(sub)


def _sub_request(request: ODataRequest, operation: Operation, created: dict[str, str]) -> ODataRequest:
    url = operation.url
    if url.startswith("$"):
        ref, sep, rest = url[1:].partition("/")
        if ref not in created:
            raise ODataError(
                400,
                f"The Content-ID reference '${ref}' does not name an earlier operation of "
                "this changeset that created an entity.",
            )
        url = created[ref] + sep + rest
    parts = urlsplit(url)
    path = parts.path
    if parts.scheme or path.startswith("/"):
        marker = path.find("/data")
        if marker < 0 or (path[marker + 5 : marker + 6] not in ("", "/")):
            raise bad_request(
                f"The batch operation URL '{operation.url}' is not below the service root /data."
            )
        path = path[marker + 5 :]
    path = path.lstrip("/")
    if path.split("/", 1)[0].split("?", 1)[0] == "$batch":
        raise bad_request("A batch operation cannot itself be a $batch request.")
    return ODataRequest(
        method=operation.method,
        path=path,
        query=parse_qsl(parts.query, keep_blank_values=True),
        headers=operation.headers,
        body=operation.body,
        base_url=request.base_url,
        company=request.company,
        query_string=parts.query,
    )


def _response_part(response: ODataResponse, content_id: str | None) -> bytes:
    head = ["Content-Type: application/http", "Content-Transfer-Encoding: binary"]
    if content_id:
        head.append(f"Content-ID: {content_id}")
    try:
        reason = HTTPStatus(response.status).phrase
    except ValueError:
        reason = ""
    lines = [*head, "", f"HTTP/1.1 {response.status} {reason}".rstrip()]
    lines += [f"{name}: {value}" for name, value in response.headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8") + response.body + b"\r\n"
