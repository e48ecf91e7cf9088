"""The sans-IO request and response of the OData handler: what HTTP routes and $batch parts both turn into."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

ODATA_JSON = (
    "application/json; odata.metadata=minimal; odata.streaming=true; IEEE754Compatible=false; charset=utf-8"
)
ODATA_VERSION = ("OData-Version", "4.0")


@dataclass
class ODataRequest:
    """One request below ``/data``; ``path`` is raw, without the ``/data/`` prefix (``CustomersV3(...)``)."""

    method: str
    path: str
    query: list[tuple[str, str]]  # decoded (name, value) pairs in request order
    headers: Mapping[str, str]  # lower-case names
    body: bytes
    base_url: str  # scheme://host:port of the request itself: links are built from it
    company: str  # the caller's default company (ref §1.2)
    query_string: str = ""  # raw, for messages

    def header(self, name: str, default: str = "") -> str:
        return self.headers.get(name.lower(), default)

    @property
    def service_root(self) -> str:
        return f"{self.base_url}/data"

    @property
    def url(self) -> str:
        qs = f"?{self.query_string}" if self.query_string else ""
        return f"{self.service_root}/{self.path}{qs}"


@dataclass
class ODataResponse:
    status: int
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""

    def header(self, name: str) -> str | None:
        lname = name.lower()
        for key, value in self.headers:
            if key.lower() == lname:
                return value
        return None


def json_response(
    status: int, payload: Any, *, headers: list[tuple[str, str]] | None = None
) -> ODataResponse:
    body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return raw_json_response(status, body, headers=headers)


def raw_json_response(
    status: int, body: bytes, *, headers: list[tuple[str, str]] | None = None
) -> ODataResponse:
    return ODataResponse(status, [("Content-Type", ODATA_JSON), ODATA_VERSION, *(headers or [])], body)


def empty_response(status: int = 204, *, headers: list[tuple[str, str]] | None = None) -> ODataResponse:
    return ODataResponse(status, [ODATA_VERSION, *(headers or [])], b"")


def parse_prefer(header: str) -> dict[str, str]:
    """``Prefer: return=minimal, odata.maxpagesize=50`` -> {"return": "minimal", ...}."""
    prefs: dict[str, str] = {}
    for item in header.split(","):
        name, _, value = item.strip().partition("=")
        if name:
            prefs[name.strip().lower()] = value.strip().strip('"')
    return prefs
