"""What the demo drives: the running function app (through the runner's host endpoints), the D365 emulator
(through its admin API) and blob storage (through the app's own settings), with the app settings it runs on.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import requests
from azure.core.exceptions import ResourceNotFoundError

from runner import StartedInfo
from shared.context import AppContext
from shared.d365.odata import ODataClient
from shared.settings import Settings
from shared.storage import BlobStore

__all__ = ["DemoTarget", "FlowFailed", "Stack", "eventually"]

T = TypeVar("T")


class FlowFailed(Exception):
    """A flow did not end as it should; the message says what was seen instead."""


@dataclass(frozen=True)
class DemoTarget:
    """Where the demo runs: the app settings the functions run with, the emulator and the runner."""

    values: Mapping[str, str]
    emulator_url: str  # the emulator's base URL; its admin API is at {emulator_url}/_emulator
    functions: StartedInfo


@dataclass
class Stack:
    """The handles every flow uses; one per demo run, shared by the flow threads."""

    target: DemoTarget
    stop: threading.Event = field(default_factory=threading.Event)
    _nudged: dict[str, float] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _d365: AppContext | None = None

    def __post_init__(self) -> None:
        self.settings = Settings.from_env(self.target.values)
        self.store = BlobStore(self.settings.storage.blob_service_client())
        self.started = datetime.now(UTC)

    def close(self) -> None:
        self.store.service.close()
        if self._d365 is not None:
            self._d365.close()

    # -- D365 through OData, as an operator reads it (``python -m ops`` uses the same app context)

    @property
    def odata(self) -> ODataClient:
        """The app's own OData client on the app's identity, made on first use and shared by the flows."""
        with self._lock:
            if self._d365 is None:
                self._d365 = AppContext.from_settings(self.settings)
            return self._d365.odata

    # -- the emulator's admin API

    def admin(self, method: str, path: str, **kwargs: Any) -> Any:
        """Call ``/_emulator/{path}``; the decoded JSON answer (None when empty); raises on 4xx/5xx."""
        url = f"{self.target.emulator_url}/_emulator/{path.lstrip('/')}"
        response = requests.request(method, url, timeout=60, **kwargs)
        if response.status_code >= 400:
            raise FlowFailed(
                f"emulator {method} /_emulator/{path}: HTTP {response.status_code} {response.text[:300]}"
            )
        return response.json() if response.content else None

    # -- the function app

    def trigger(self, function: str) -> None:
        """Run a timer function now, as ``POST /admin/functions/{name}`` does on the Functions host."""
        url = f"{self.target.functions.base_url}/admin/functions/{function}"
        headers = {"x-functions-key": self.target.functions.master_key}
        response = requests.post(url, json={"input": ""}, headers=headers, timeout=30)
        if response.status_code != 202:
            raise FlowFailed(f"could not run {function} now: HTTP {response.status_code}")

    def nudge(self, function: str, every: float) -> None:
        """Trigger ``function`` unless it was triggered less than ``every`` seconds ago (flows share it)."""
        now = time.monotonic()
        with self._lock:
            if now - self._nudged.get(function, -every) < every:
                return
            self._nudged[function] = now
        self.trigger(function)

    def function_url(self, function: str) -> str:
        found = next((h for h in self.target.functions.http if h.function == function), None)
        if found is None:
            raise FlowFailed(f"the function app does not serve {function}")
        return found.url

    # -- blob storage

    def days(self) -> list[datetime]:
        """The UTC days since the demo started (usually one): the date folders results may land in."""
        day, last, found = self.started, datetime.now(UTC), []
        while day.date() <= last.date():
            found.append(day)
            day += timedelta(days=1)
        return found

    def names(self, container: str, prefix: str) -> list[str]:
        client = self.store.service.get_container_client(container)
        if not client.exists():
            return []
        return [str(b.name) for b in client.list_blobs(name_starts_with=prefix)]

    def read(self, container: str, name: str) -> bytes | None:
        """The blob's bytes, None when it (or its container) does not exist; never creates anything."""
        try:
            return bytes(self.store.service.get_blob_client(container, name).download_blob().readall())
        except ResourceNotFoundError:
            return None

    def read_json(self, container: str, name: str) -> dict[str, Any] | None:
        data = self.read(container, name)
        return None if data is None else dict(json.loads(data))

    def exists(self, container: str, name: str) -> bool:
        return bool(self.store.service.get_blob_client(container, name).exists())


def eventually(
    stack: Stack, check: Callable[[], T | None], *, timeout: float, what: str, pause: float = 1.0
) -> T:
    """``check()`` until it answers something, at most ``timeout`` seconds (the flow's bounded wait)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value is not None:
            return value
        if time.monotonic() >= deadline:
            raise FlowFailed(f"{what}: not seen within {timeout:.0f} s")
        if stack.stop.wait(pause):
            raise FlowFailed(f"{what}: stopped before it happened")
