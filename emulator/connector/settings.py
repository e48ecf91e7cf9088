"""Run-time settings of the recurring-integrations emulation (``/_emulator/connector/settings``)."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

DEFAULT_VISIBILITY_TIMEOUT = 30 * 60  # "becomes available to dequeue every 30 minutes" (ref §4.1)
# UNCONFIRMED limit: enqueues of ~36 MB and 50 MB were answered 413 (MicrosoftDocs issue #2467, RIS #135,
# peers.md §2.1). 30,000,000 bytes is IIS's default maxAllowedContentLength, which explains both.
DEFAULT_MAX_ENQUEUE_BYTES = 30_000_000


@dataclass
class ConnectorSettings:
    """Run-time knobs (``PUT /_emulator/connector/settings``); ``reset`` restores these defaults."""

    visibility_timeout_seconds: float = DEFAULT_VISIBILITY_TIMEOUT
    pickup_delay_seconds: float = 2.0  # an enqueued message waits this long before processing starts
    step_seconds: float = 1.0  # time spent in Preprocessing, and at least in Processing
    export_delay_seconds: float = 2.0  # after a data change, wait (coalescing changes) then export
    max_enqueue_bytes: int = DEFAULT_MAX_ENQUEUE_BYTES  # 0 = no limit
    download_base_url: str | None = None  # None: http:// + the dequeue's Host (DownloadLocation, routes.py)
    paused: bool = False  # the worker starts no new step (tests use it to line messages up)

    def update(self, changes: dict[str, Any]) -> None:
        known = {f.name: f for f in fields(self)}
        for name, value in changes.items():
            if name not in known:
                raise ValueError(f"unknown setting '{name}' (known: {', '.join(sorted(known))})")
            if name == "download_base_url":
                if value is not None and not (isinstance(value, str) and value.startswith("http")):
                    raise ValueError("'download_base_url' must be an http(s) URL or null")
                value = value.rstrip("/") if value else None
            elif name == "paused":
                if not isinstance(value, bool):
                    raise ValueError("'paused' must be true or false")
            elif isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise ValueError(f"'{name}' must be a non-negative number")
            elif name == "max_enqueue_bytes":
                value = int(value)
            setattr(self, name, value)

    def to_json(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}
