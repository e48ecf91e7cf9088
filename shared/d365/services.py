"""JSON custom services (ref §6): call ``/api/services/{group}/{service}/{operation}`` and read the listings.

Operations are POSTs whose body holds the X++ parameters by name and whose answer is the return value
itself (a bare string, number, null, object or array — not wrapped in ``{"value": ...}``). A call is not
idempotent unless the caller says so: D365 may have run the operation before a 5xx or a dropped
connection, so only 429s (refused before any work) and failures to connect are retried.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import requests

from shared.d365.errors import D365Error
from shared.d365.transport import D365Transport

__all__ = ["CustomServiceClient", "OperationDescription", "Parameter"]

SERVICES_ROOT = "/api/services"


@dataclass(frozen=True)
class Parameter:
    name: str
    type: str | None


@dataclass(frozen=True)
class OperationDescription:
    """One operation's signature from ``GET /api/services/{group}/{service}/{operation}``; ``raw`` as sent."""

    parameters: tuple[Parameter, ...]
    return_type: str | None
    raw: Any


class CustomServiceClient:
    """Calls JSON custom services through the shared transport (same retries, auth and typed errors).

    D365 answers an unhandled X++ exception with HTTP 500 (ref §6); its body shape is UNCONFIRMED —
    ``{"Message": ...}`` or the OData ``{"error": {..., "innererror": ...}}`` envelope — and
    ``errors.parse_error_body`` accepts both, so the raised ``D365ServerError`` carries D365's own text.
    """

    def __init__(self, transport: D365Transport) -> None:
        self.transport = transport

    def call(
        self,
        group: str,
        service: str,
        operation: str,
        payload: Mapping[str, Any] | None = None,
        *,
        idempotent: bool = False,
    ) -> Any:
        """POST the operation and return its decoded return value as-is (None for an empty answer).

        ``payload`` maps X++ parameter names to values; None sends an empty body (``Content-Length: 0``),
        as Microsoft's sample does for parameterless operations. Pass ``idempotent=True`` only for
        read-only operations: it allows retries after 5xx and dropped connections.
        """
        path = _path(group, service, operation)
        body = dict(payload) if payload is not None else None
        response = self.transport.request("POST", path, json=body, idempotent=idempotent)
        return _decode(response, allow_empty=True)

    def list_groups(self) -> list[str]:
        """Deployed service group names (``{"ServiceGroups": [{"Name": ...}]}``, a third-party shape)."""
        return _names(self._get(SERVICES_ROOT), "ServiceGroups")

    def list_services(self, group: str) -> list[str]:
        return _names(self._get(_path(group)), "Services")

    def list_operations(self, group: str, service: str) -> list[str]:
        return _names(self._get(_path(group, service)), "Operations")

    def describe(self, group: str, service: str, operation: str) -> OperationDescription:
        """Parameter names/types and the return type of one operation."""
        raw = self._get(_path(group, service, operation))
        data = raw if isinstance(raw, dict) else {}
        params = _field(data, "Parameters")
        parameters = tuple(
            Parameter(str(_field(item, "Name")), _optional_str(_field(item, "Type")))
            for item in (params if isinstance(params, list) else [])
            if isinstance(item, dict) and _field(item, "Name") is not None
        )
        returned = _field(data, "Return")
        return_type = _optional_str(_field(returned, "Type")) if isinstance(returned, dict) else None
        return OperationDescription(parameters, return_type, raw)

    def _get(self, path: str) -> Any:
        return _decode(self.transport.request("GET", path), allow_empty=False)


def _path(*segments: str) -> str:
    """``/api/services/...`` with each name checked and percent-encoded (a name can never add a segment)."""
    for segment in segments:
        if not isinstance(segment, str) or not segment.strip() or segment in (".", ".."):
            raise ValueError(f"invalid custom service path segment: {segment!r}")
        if any(ch in segment for ch in "/\\?#") or any(ord(ch) < 32 or ord(ch) == 127 for ch in segment):
            raise ValueError(f"invalid custom service path segment: {segment!r}")
    return "/".join([SERVICES_ROOT, *(quote(segment, safe="") for segment in segments)])


def _decode(response: requests.Response, *, allow_empty: bool) -> Any:
    text = response.content.decode("utf-8-sig", errors="replace")
    if not text.strip():
        if allow_empty:
            return None  # a void operation
        text = "null"
    try:
        return json.loads(text)
    except ValueError:
        raise D365Error(
            f"custom service answered HTTP {response.status_code} with a body that is not JSON "
            f"(Content-Type {response.headers.get('Content-Type', 'unknown')})",
            request_id=response.request.headers.get("x-ms-client-request-id"),
        ) from None


def _field(data: Mapping[str, Any], name: str) -> Any:
    """Case-tolerant lookup: the listing shapes are third-party observations (ref §6)."""
    if name in data:
        return data[name]
    lowered = name.lower()
    return next((value for key, value in data.items() if key.lower() == lowered), None)


def _names(data: Any, container: str) -> list[str]:
    items = _field(data, container) if isinstance(data, dict) else data
    if isinstance(data, dict) and items is None:
        items = _field(data, "value")
    names: list[str] = []
    for item in items if isinstance(items, list) else []:
        if isinstance(item, str):
            names.append(item)
        elif isinstance(item, dict) and _field(item, "Name") is not None:
            names.append(str(_field(item, "Name")))
    return names


def _optional_str(value: Any) -> str | None:
    return None if value is None else str(value)
