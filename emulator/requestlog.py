"""The request log and counters behind ``GET /_emulator/requests`` and ``/_emulator/counters``.

Only what a test needs to see how a client behaved: method, path, a redacted query, status, duration,
API family, caller. Headers and bodies are never kept, so tokens and client secrets cannot leak here;
query parameters that may carry secrets (SAS ``sig``, ``client_secret``, ...) are masked.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import unquote_plus

REDACTED = "REDACTED"
SENSITIVE_QUERY_KEYS = frozenset(
    {
        "sig",
        "signature",
        "client_secret",
        "client_assertion",
        "assertion",
        "access_token",
        "refresh_token",
        "id_token",
        "token",
        "code",
        "password",
        "secret",
        "key",
        "api_key",
        "apikey",
        "x-identity-header",
    }
)


def redact_query(raw: bytes | str) -> str:
    """The query string as sent, with the values of sensitive parameters replaced."""
    text = raw.decode("latin-1") if isinstance(raw, bytes) else raw
    if not text:
        return ""
    parts = []
    for part in text.split("&"):
        name, sep, _ = part.partition("=")
        if sep and unquote_plus(name).lower() in SENSITIVE_QUERY_KEYS:
            part = f"{name}={REDACTED}"
        parts.append(part)
    return "&".join(parts)


@dataclass(slots=True)
class RequestRecord:
    seq: int
    time: float  # epoch seconds when the request arrived
    method: str
    path: str
    query: str  # redacted
    family: str
    status: int  # 0 when the connection was dropped before any response
    duration_ms: float
    app_id: str | None = None
    fault: str | None = None  # id of the fault rule applied
    throttled: str | None = None  # limit kind when answered 429 by the service protection limits
    dropped: str | None = None  # before_response | mid_body

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class RequestLog:
    """A bounded ring of recent requests plus counters per family and status (never trimmed)."""

    def __init__(self, capacity: int = 20000) -> None:
        self._lock = threading.Lock()
        self._records: deque[RequestRecord] = deque(maxlen=capacity)
        self._seq = itertools.count(1)
        self._counters: dict[str, dict[str, int]] = {}
        self._total = 0

    def next_seq(self) -> int:
        return next(self._seq)

    def add(self, record: RequestRecord) -> None:
        with self._lock:
            self._records.append(record)
            self._total += 1
            by_status = self._counters.get(record.family)
            if by_status is None:
                by_status = self._counters[record.family] = {}
            key = str(record.status) if record.status else "dropped"
            by_status[key] = by_status.get(key, 0) + 1

    def clear(self) -> None:
        with self._lock:
            self._records.clear()
            self._counters = {}
            self._total = 0

    def records(
        self,
        *,
        family: str | None = None,
        status: int | None = None,
        path_prefix: str | None = None,
        limit: int = 100,
    ) -> list[dict[str, Any]]:
        """The most recent matching records, oldest first."""
        with self._lock:
            snapshot = list(self._records)
        out: list[dict[str, Any]] = []
        for record in reversed(snapshot):
            if family and record.family != family:
                continue
            if status is not None and record.status != status:
                continue
            if path_prefix and not record.path.startswith(path_prefix):
                continue
            out.append(record.to_json())
            if len(out) >= limit:
                break
        out.reverse()
        return out

    def counters(self) -> dict[str, Any]:
        with self._lock:
            families = {family: dict(statuses) for family, statuses in self._counters.items()}
            total = self._total
        return {"total": total, "families": families, "time": time.time()}
