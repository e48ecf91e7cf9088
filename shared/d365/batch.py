"""OData v4.0 multipart ``$batch`` (ref §1.6), sans-IO: build the request body, parse the answer, map it back.

A batch is a list of standalone operations and changesets (atomic groups). ``BatchRequest.encode`` gives the
bytes and Content-Type to POST to ``/data/$batch``; ``BatchRequest.parse_response`` turns the multipart answer
into one ``OperationResult`` per operation, in request order, whatever shape the server chose (see there).
Decoding the multipart answer is ``multipart``'s job; cutting huge streams of writes into batches, ``bulk``'s.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from shared.d365.errors import ODataQueryError
from shared.d365.multipart import BatchResponse, Part, parse_multipart
from shared.d365.odata_query import action_path, encode_query, entity_path

__all__ = [
    "BatchOperation",
    "BatchRequest",
    "BatchResult",
    "ChangeSet",
    "OperationResult",
    "match_responses",
]

CRLF: Final = b"\r\n"
JSON_CONTENT_TYPE: Final = "application/json;odata.metadata=minimal;charset=UTF-8"
_ODATA_HEADERS: Final = {"OData-Version": "4.0", "OData-MaxVersion": "4.0", "Accept": "application/json"}


@dataclass(frozen=True, eq=False)
class BatchOperation:
    """One request inside a batch. ``url`` is under the service root: ``CustomersV3``, ``/data/...``,
    an absolute URL, or a ``$<content-id>`` reference to an earlier operation of the same changeset."""

    method: str
    url: str
    body: Any = None
    headers: Mapping[str, str] = field(default_factory=dict)
    content_id: str | None = None

    @classmethod
    def create(cls, entity_set: str, values: Mapping[str, Any]) -> BatchOperation:
        return cls("POST", entity_path(entity_set), dict(values), {"Prefer": "return=representation"})

    @classmethod
    def update(
        cls, entity_set: str, key: object, changes: Mapping[str, Any], *, etag: str | None = None
    ) -> BatchOperation:
        return cls("PATCH", entity_path(entity_set, _key(key)), dict(changes), _if_match(etag))

    @classmethod
    def replace(
        cls, entity_set: str, key: object, values: Mapping[str, Any], *, etag: str | None = None
    ) -> BatchOperation:
        return cls("PUT", entity_path(entity_set, _key(key)), dict(values), _if_match(etag))

    @classmethod
    def delete(cls, entity_set: str, key: object, *, etag: str | None = None) -> BatchOperation:
        return cls("DELETE", entity_path(entity_set, _key(key)), None, _if_match(etag))

    @classmethod
    def get(
        cls, entity_set: str, key: object = None, *, params: Mapping[str, str] | None = None
    ) -> BatchOperation:
        return cls("GET", entity_path(entity_set, key) + (f"?{encode_query(params)}" if params else ""))

    @classmethod
    def action(
        cls, entity_set: str, name: str, *, key: object = None, parameters: Mapping[str, Any] | None = None
    ) -> BatchOperation:
        return cls("POST", action_path(entity_set, name, key), dict(parameters or {}))

    @property
    def is_read(self) -> bool:
        return self.method.upper() in ("GET", "HEAD")


def _key(key: object) -> object:
    if key is None:
        raise ODataQueryError("this operation needs the entity key")
    return key


def _if_match(etag: str | None) -> dict[str, str]:
    return {"If-Match": etag} if etag else {}


class ChangeSet:
    """An atomic group: D365 applies all of its operations or none (ref §1.6)."""

    def __init__(self, batch: BatchRequest) -> None:
        self._batch = batch
        self.operations: list[BatchOperation] = []

    def add(self, operation: BatchOperation) -> BatchOperation:
        if operation.is_read:
            raise ODataQueryError("a changeset may only hold writes (POST, PATCH, PUT, DELETE), not reads")
        self._batch._register(operation)
        self.operations.append(operation)
        return operation

    def __len__(self) -> int:
        return len(self.operations)


class BatchRequest:
    """Builder of one ``$batch``: ``add()`` standalone operations, ``changeset()`` atomic groups."""

    def __init__(self) -> None:
        self.items: list[BatchOperation | ChangeSet] = []
        self.content_ids: dict[int, str] = {}  # id(operation) -> Content-ID sent (unique in the batch)
        self._used: set[str] = set()
        self._next = 1

    def _register(self, operation: BatchOperation) -> None:
        if id(operation) in self.content_ids:
            raise ODataQueryError("the same BatchOperation object was added twice to one batch")
        cid = operation.content_id
        if cid is None:
            while str(self._next) in self._used:
                self._next += 1
            cid = str(self._next)
        elif cid in self._used or not re.fullmatch(r"[A-Za-z0-9_.-]+", cid):
            raise ODataQueryError(f"Content-ID {cid!r} is duplicated or invalid")
        self._used.add(cid)
        self.content_ids[id(operation)] = cid

    def add(self, operation: BatchOperation) -> BatchOperation:
        self._register(operation)
        self.items.append(operation)
        return operation

    def changeset(self, operations: Iterable[BatchOperation] = ()) -> ChangeSet:
        changeset = ChangeSet(self)
        for operation in operations:
            changeset.add(operation)
        self.items.append(changeset)
        return changeset

    @property
    def operations(self) -> list[BatchOperation]:
        out: list[BatchOperation] = []
        for item in self.items:
            out.extend(item.operations if isinstance(item, ChangeSet) else [item])
        return out

    def __len__(self) -> int:
        return sum(len(item) if isinstance(item, ChangeSet) else 1 for item in self.items)

    @property
    def read_only(self) -> bool:
        """Only reads: safe to retry blindly, nothing can be applied twice."""
        return all(op.is_read for op in self.operations)

    def parse_response(self, content_type: str, body: bytes) -> BatchResult:
        """Parse the ``$batch`` answer to this request (raises ValueError when it is not multipart)."""
        return match_responses(self, parse_multipart(content_type, body))

    def encode(self, base_url: str, *, boundary: str | None = None) -> tuple[bytes, str]:
        """Serialise as ``multipart/mixed`` with CRLF line endings; returns (body, Content-Type header)."""
        if not self.items:
            raise ODataQueryError("an empty batch cannot be sent")
        bodies = {id(op): _json_body(op.body) for op in self.operations}
        batch_boundary = boundary or f"batch_{uuid.uuid4()}"
        if any(batch_boundary.encode() in b for b in bodies.values() if b):
            raise ODataQueryError("the batch boundary occurs in a body; pass another boundary")
        out: list[bytes] = []
        for item in self.items:
            out += [b"--", batch_boundary.encode(), CRLF]
            if isinstance(item, ChangeSet):
                if not item.operations:
                    raise ODataQueryError("a changeset needs at least one operation")
                cs_boundary = f"changeset_{uuid.uuid4()}"
                out += [f"Content-Type: multipart/mixed; boundary={cs_boundary}".encode(), CRLF, CRLF]
                for op in item.operations:
                    out += [b"--", cs_boundary.encode(), CRLF]
                    out.append(self._part(op, base_url, bodies[id(op)], in_changeset=True))
                    out.append(CRLF)
                out += [b"--", cs_boundary.encode(), b"--", CRLF]
            else:
                out.append(self._part(item, base_url, bodies[id(item)], in_changeset=False))
                out.append(CRLF)
        out += [b"--", batch_boundary.encode(), b"--", CRLF]
        return b"".join(out), f"multipart/mixed; boundary={batch_boundary}"

    def _part(self, op: BatchOperation, base_url: str, body: bytes | None, *, in_changeset: bool) -> bytes:
        lines = ["Content-Type: application/http", "Content-Transfer-Encoding: binary"]
        # Content-ID only inside changesets, as in ref §1.6: OData 4.0 servers may refuse it elsewhere
        # (UNCONFIRMED for D365), and standalone answers are matched by order anyway.
        if in_changeset:
            lines.append(f"Content-ID: {self.content_ids[id(op)]}")
        lines += ["", f"{op.method.upper()} {_absolute(base_url, op.url)} HTTP/1.1"]
        headers = dict(_ODATA_HEADERS)
        if body is not None:
            headers["Content-Type"] = JSON_CONTENT_TYPE
        headers.update(op.headers)
        lines += [f"{name}: {value}" for name, value in headers.items()]
        lines += ["", ""]
        return "\r\n".join(lines).encode("utf-8") + (body or b"")


def _json_body(body: Any) -> bytes | None:
    if body is None:
        return None
    if isinstance(body, bytes):
        return body
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _absolute(base_url: str, url: str) -> str:
    if url.startswith(("$", "http://", "https://")):
        return url
    root = base_url.rstrip("/")
    return f"{root}{url}" if url.startswith("/") else f"{root}/data/{url}"


# ---------------------------------------------------------------------------------------------- matching


@dataclass
class OperationResult:
    """The outcome of one operation of a batch.

    ``rolled_back``: its own answer was fine (or missing) but its changeset failed, so nothing was applied.
    ``throttled``: the server's answer proves it was not applied because of a 429 (safe to re-send).
    ``not_sent``: the server answered nothing for its part (stopped before it), so it was not executed.
    """

    operation: BatchOperation
    content_id: str
    response: BatchResponse | None
    changeset_failed: bool = False
    rolled_back: bool = False
    throttled: bool = False
    not_sent: bool = False

    @property
    def ok(self) -> bool:
        return self.response is not None and self.response.ok and not self.changeset_failed

    @property
    def status(self) -> int | None:
        return None if self.response is None else self.response.status

    @property
    def retryable(self) -> bool:
        """True only when the answer proves the operation was not applied and only for a transient reason."""
        return self.throttled or self.not_sent

    @property
    def retry_after(self) -> float | None:
        return None if self.response is None else self.response.retry_after

    @property
    def error(self) -> tuple[str, str] | None:
        """(code, message) of the failure, or None when the operation succeeded."""
        if self.ok:
            return None
        if self.response is None:
            return "", "no answer for this operation in the batch response" + (
                " (not executed)" if self.not_sent else " (outcome unknown)"
            )
        code, message = self.response.error
        if self.rolled_back:
            return code, f"rolled back because its changeset failed: {message}"
        return code, message


@dataclass
class BatchResult:
    """Every operation's ``OperationResult`` in request order."""

    results: list[OperationResult]
    parts: list[Part] = field(default_factory=list, repr=False)

    def __iter__(self) -> Iterator[OperationResult]:
        return iter(self.results)

    def __len__(self) -> int:
        return len(self.results)

    def __getitem__(self, index: int) -> OperationResult:
        return self.results[index]

    @property
    def ok(self) -> bool:
        return all(result.ok for result in self.results)

    @property
    def failures(self) -> list[OperationResult]:
        return [result for result in self.results if not result.ok]

    def for_operation(self, operation: BatchOperation) -> OperationResult:
        for result in self.results:
            if result.operation is operation:
                return result
        raise KeyError("operation is not part of this batch")

    def by_content_id(self, content_id: str) -> OperationResult:
        for result in self.results:
            if result.content_id == content_id:
                return result
        raise KeyError(content_id)


def _match_changeset(
    batch: BatchRequest, ops: list[BatchOperation], part: Part | None
) -> list[OperationResult]:
    cids = [batch.content_ids[id(op)] for op in ops]
    if part is None:
        return [OperationResult(op, cid, None, not_sent=True) for op, cid in zip(ops, cids, strict=True)]
    responses = [part] if isinstance(part, BatchResponse) else part
    by_cid: dict[str, BatchResponse] = {}
    unmatched: list[BatchResponse] = []
    for response in responses:
        if response.content_id in cids and response.content_id not in by_cid:
            by_cid[response.content_id] = response
        else:
            unmatched.append(response)
    errors = [r for r in responses if not r.ok]
    own: list[BatchResponse | None] = []
    for cid in cids:
        mine = by_cid.get(cid)
        if mine is None and unmatched and not (errors and len(responses) < len(ops)):
            mine = unmatched.pop(0)  # no Content-ID echoed: match by order
        own.append(mine)
    if not errors:
        return [OperationResult(op, cid, r) for op, cid, r in zip(ops, cids, own, strict=True)]
    # Atomic changeset failed (OData 4.0 may answer it with one error response): nothing was applied.
    failure = next((r for r in errors if r.status != 429), errors[0])
    throttled = all(r.status == 429 for r in errors)
    results = []
    for op, cid, mine in zip(ops, cids, own, strict=True):
        own_error = mine is not None and not mine.ok
        results.append(
            OperationResult(
                op,
                cid,
                mine if own_error else failure,
                changeset_failed=True,
                rolled_back=not own_error,
                throttled=throttled,
            )
        )
    return results


def match_responses(batch: BatchRequest, parts: list[Part]) -> BatchResult:
    """Pair answers with operations: top-level parts by position, changeset members by Content-ID or order."""
    results: list[OperationResult] = []
    for index, item in enumerate(batch.items):
        part = parts[index] if index < len(parts) else None
        if isinstance(item, ChangeSet):
            results += _match_changeset(batch, item.operations, part)
            continue
        cid = batch.content_ids[id(item)]
        if isinstance(part, list):
            part = part[0] if part else None
        if part is None:
            results.append(OperationResult(item, cid, None, not_sent=True))
        else:
            results.append(OperationResult(item, cid, part, throttled=part.status == 429))
    return BatchResult(results, parts)
