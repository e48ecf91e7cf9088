"""Reading ``multipart/mixed`` ``$batch`` answers (ref §1.6), sans-IO: MIME parts and the HTTP answers inside.

``split_multipart`` splits a body into parts two levels deep (batch and changesets), tolerating CRLF or bare
LF line endings; ``parse_multipart`` turns each ``application/http`` part into a ``BatchResponse``. Matching
the answers to the operations that asked for them is ``batch``'s job.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from email.message import Message
from typing import Any

from shared.d365.errors import parse_error_body
from shared.d365.retry import parse_retry_after

__all__ = ["BatchResponse", "MimePart", "Part", "parse_multipart", "split_multipart"]


@dataclass
class BatchResponse:
    """One HTTP answer inside the batch; header names are lower-cased."""

    status: int
    reason: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    body: Any = None  # decoded JSON, text, or None when empty
    content_id: str | None = None

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    @property
    def retry_after(self) -> float | None:
        return parse_retry_after(self.headers.get("retry-after"))

    @property
    def etag(self) -> str | None:
        return self.headers.get("etag") or (
            self.body.get("@odata.etag") if isinstance(self.body, dict) else None
        )

    @property
    def error(self) -> tuple[str, str]:
        """(code, message) with D365's innererror text preferred (ref §1.7)."""
        text = self.body if isinstance(self.body, str) else json.dumps(self.body) if self.body else None
        code, message, inner, _ = parse_error_body(text)
        return code, inner or message or f"HTTP {self.status} {self.reason}".strip()


Part = BatchResponse | list[BatchResponse]


def _boundary(content_type: str) -> str | None:
    msg = Message()
    msg["content-type"] = content_type
    value = msg.get_param("boundary")
    return value if isinstance(value, str) and value else None


def _split_head(data: bytes) -> tuple[dict[str, str], bytes]:
    """Headers (lower-cased names) and the rest, tolerating CRLF or bare LF line endings."""
    if data.startswith((b"\r\n", b"\n")):
        return {}, data[2:] if data.startswith(b"\r\n") else data[1:]
    match = re.search(rb"\r?\n\r?\n", data)
    head, rest = (data, b"") if match is None else (data[: match.start()], data[match.end() :])
    headers: dict[str, str] = {}
    for line in re.split(rb"\r?\n", head):
        name, sep, value = line.decode("latin-1").partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return headers, rest


def _split_parts(body: bytes, boundary: str) -> list[bytes]:
    delimiter = re.compile(rb"(?:\A|\r?\n)--" + re.escape(boundary.encode()) + rb"(--)?[ \t]*(?:\r?\n|\Z)")
    parts: list[bytes] = []
    start: int | None = None
    for match in delimiter.finditer(body):
        if start is not None:
            parts.append(body[start : match.start()])
        if match.group(1):
            return parts
        start = match.end()
    if start is not None and body[start:].strip():
        parts.append(body[start:])  # no closing delimiter: keep what arrived
    return parts


def _http_response(data: bytes, content_id: str | None) -> BatchResponse:
    data = data.lstrip(b"\r\n")
    line_end = re.search(rb"\r?\n", data)
    status_line = (data if line_end is None else data[: line_end.start()]).decode("latin-1")
    words = status_line.split(" ", 2)
    if len(words) < 2 or not words[0].startswith("HTTP/") or not words[1].isdigit():
        raise ValueError(f"not an HTTP response line: {status_line[:80]!r}")
    headers, raw = _split_head(b"" if line_end is None else data[line_end.end() :])
    raw = raw.rstrip(b"\r\n")
    body: Any = None
    if raw:
        text = raw.decode("utf-8-sig", errors="replace")
        body = text
        if "json" in headers.get("content-type", "") or text.lstrip()[:1] in ("{", "["):
            try:
                body = json.loads(text)
            except ValueError:
                body = text
    return BatchResponse(
        status=int(words[1]),
        reason=words[2].strip() if len(words) > 2 else "",
        headers=headers,
        body=body,
        content_id=content_id or headers.get("content-id"),
    )


@dataclass
class MimePart:
    """One MIME part: its headers (lower-cased names) and content, or its own parts when multipart."""

    headers: dict[str, str]
    content: bytes
    parts: list[MimePart] | None = None


def split_multipart(content_type: str, body: bytes) -> list[MimePart]:
    """Split a multipart body (two levels: batch and changesets); used for answers and, in tests, requests."""
    boundary = _boundary(content_type)
    if boundary is None or not content_type.strip().lower().startswith("multipart/"):
        raise ValueError(f"not a multipart body: Content-Type {content_type!r}")
    out = []
    for raw in _split_parts(body, boundary):
        headers, content = _split_head(raw)
        nested = headers.get("content-type", "")
        children = split_multipart(nested, content) if nested.lower().startswith("multipart/") else None
        out.append(MimePart(headers, content, children))
    return out


def parse_multipart(content_type: str, body: bytes) -> list[Part]:
    """Top-level parts of a batch answer: a ``BatchResponse``, or a list of them for a changeset."""
    parts: list[Part] = []
    for part in split_multipart(content_type, body):
        if part.parts is not None:
            parts.append([_http_response(p.content, p.headers.get("content-id")) for p in part.parts])
        else:
            parts.append(_http_response(part.content, part.headers.get("content-id")))
    return parts
