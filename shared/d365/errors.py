"""Typed errors for every D365 F&O call, carrying D365's own message and the request id.

    D365Error
    ├── D365ConnectionError      network failure (refused, reset, dropped mid-body) after the retry budget
    ├── D365TimeoutError         the total deadline of one logical call ran out
    └── D365HTTPError            D365 answered with a non-success status
        ├── D365AuthError        401 / 403 (401 only after the single token refresh)
        ├── D365NotFoundError    404
        ├── D365ConflictError    409 / 412 (ETag mismatch, duplicate key)
        ├── D365ThrottledError   429 still returned when the retry budget ran out
        ├── D365ClientError      any other 4xx (never retried)
        └── D365ServerError      5xx after the retry budget (or at once for a non-idempotent call)

Messages never contain tokens, secrets or SAS signatures: URLs are redacted before they are stored.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = [
    "D365AuthError",
    "D365ClientError",
    "D365ConflictError",
    "D365ConnectionError",
    "D365Error",
    "D365HTTPError",
    "D365NotFoundError",
    "D365ServerError",
    "D365ThrottledError",
    "D365TimeoutError",
    "ODataQueryError",
    "error_for_status",
    "parse_error_body",
]


class D365Error(Exception):
    """Base class of every error raised by the D365 client."""

    def __init__(
        self,
        message: str,
        *,
        request_id: str | None = None,
        url: str | None = None,
        server_request_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.request_id = request_id  # ours: x-ms-client-request-id, the same on every retry of one call
        self.url = url
        self.server_request_id = server_request_id  # D365's own activity/request id header, when answered

    def __str__(self) -> str:
        parts = [self.message]
        if self.url:
            parts.append(f"url={self.url}")
        if self.request_id:
            parts.append(f"request_id={self.request_id}")
        if self.server_request_id:
            parts.append(f"server_request_id={self.server_request_id}")
        return " | ".join(parts)


class D365ConnectionError(D365Error):
    """The connection failed (refused, reset, dropped mid-body) and the retry budget is spent."""


class D365TimeoutError(D365Error):
    """The total deadline of one logical call ran out."""


class D365HTTPError(D365Error):
    """D365 answered with a non-success status."""

    def __init__(
        self,
        message: str,
        *,
        status_code: int,
        code: str = "",
        inner_message: str | None = None,
        inner_type: str | None = None,
        request_id: str | None = None,
        url: str | None = None,
        body: str | None = None,
        server_request_id: str | None = None,
    ) -> None:
        super().__init__(message, request_id=request_id, url=url, server_request_id=server_request_id)
        self.status_code = status_code
        self.code = code
        self.inner_message = inner_message
        self.inner_type = inner_type
        self.body = body

    def __str__(self) -> str:
        return f"HTTP {self.status_code}: {super().__str__()}"


class D365AuthError(D365HTTPError):
    """401 or 403: the token was refused (after one refresh) or the app lacks rights in D365."""


class D365NotFoundError(D365HTTPError):
    """404: the entity, record, service or action does not exist."""


class D365ConflictError(D365HTTPError):
    """409 or 412: a duplicate key, or the record changed since its ETag was read."""


class D365ThrottledError(D365HTTPError):
    """429: D365's service protection limits were still hit when the retry budget ran out."""

    def __init__(self, message: str, *, retry_after: float | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.retry_after = retry_after


class D365ClientError(D365HTTPError):
    """Any other 4xx: the request itself is wrong and is never retried."""


class D365ServerError(D365HTTPError):
    """5xx from D365 after the retry budget (or at once when a retry could duplicate work)."""


class ODataQueryError(ValueError):
    """A query, key or literal could not be built: raised before anything is sent."""


def parse_error_body(body: str | bytes | None) -> tuple[str, str, str | None, str | None]:
    """Return (code, message, inner_message, inner_type) from D365's error envelope (ref §1.7, §6).

    OData answers ``{"error": {"code", "message", "innererror": {"message", "type"}}}``; custom services may
    answer ``{"Message": ...}`` or plain text (UNCONFIRMED shape, so every form is accepted).
    """
    if body is None:
        return "", "", None, None
    text = body.decode("utf-8-sig", errors="replace") if isinstance(body, bytes) else body
    text = text.lstrip("\ufeff")
    try:
        data = json.loads(text)
    except ValueError:
        return "", text.strip()[:2000], None, None
    if isinstance(data, dict):
        err = data.get("error")
        if isinstance(err, dict):
            inner = err.get("innererror") or err.get("InnerError") or {}
            inner_message = inner.get("message") if isinstance(inner, dict) else None
            inner_type = inner.get("type") if isinstance(inner, dict) else None
            return str(err.get("code") or ""), str(err.get("message") or ""), inner_message, inner_type
        for key in ("Message", "message", "ExceptionMessage"):
            if isinstance(data.get(key), str):
                return "", data[key], _aspnet_detail(data, data[key]), _text(data.get("ExceptionType"))
    if isinstance(data, str):
        return "", data, None, None
    return "", text.strip()[:2000], None, None


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _aspnet_detail(data: dict[str, Any], message: str) -> str | None:
    """The more specific text of an ASP.NET-style error (``ExceptionMessage``, ``MessageDetail``, inner)."""
    for key in ("ExceptionMessage", "MessageDetail"):
        detail = _text(data.get(key))
        if detail and detail != message:
            return detail
    inner = data.get("InnerException")
    if isinstance(inner, dict):
        return _text(inner.get("ExceptionMessage")) or _text(inner.get("Message"))
    return _text(inner)


_STATUS_CLASSES: dict[int, type[D365HTTPError]] = {
    401: D365AuthError,
    403: D365AuthError,
    404: D365NotFoundError,
    409: D365ConflictError,
    412: D365ConflictError,
    429: D365ThrottledError,
}


def error_for_status(
    status_code: int,
    body: str | bytes | None,
    *,
    request_id: str | None = None,
    url: str | None = None,
    retry_after: float | None = None,
    server_request_id: str | None = None,
) -> D365HTTPError:
    """Build the typed error for a non-success answer; the message prefers D365's innererror text."""
    code, message, inner_message, inner_type = parse_error_body(body)
    best = inner_message or message or f"D365 answered HTTP {status_code}"
    cls = _STATUS_CLASSES.get(status_code)
    if cls is None:
        cls = D365ServerError if status_code >= 500 else D365ClientError
    text = body.decode("utf-8", errors="replace") if isinstance(body, bytes) else body
    kwargs: dict[str, Any] = {
        "status_code": status_code,
        "code": code,
        "inner_message": inner_message,
        "inner_type": inner_type,
        "request_id": request_id,
        "url": url,
        "body": text[:4000] if text else None,
        "server_request_id": server_request_id,
    }
    if cls is D365ThrottledError:
        return D365ThrottledError(best, retry_after=retry_after, **kwargs)
    return cls(best, **kwargs)
