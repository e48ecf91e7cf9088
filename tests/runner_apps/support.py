"""Test helpers: runners over the sample app against the session Azurite, with fast polling."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from azure.storage.blob import BlobServiceClient

from localstack.processes import AzuriteInfo
from runner import Runner
from tests.runner_apps.recorder import Recorder
from tests.runner_apps.sample_app import build_app

APP_ROOT = Path(__file__).resolve().parent
NON_HTTP = (
    "tick",
    "startup_tick",
    "slow_tick",
    "flaky_tick",
    "on_inbound",
    "on_csv",
    "on_poison",
    "on_slow",
    "on_sdk_client",
)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def sample_settings(azurite: AzuriteInfo, *, enable: tuple[str, ...] = (), **values: str) -> dict[str, str]:
    """Settings for the sample app: every non-HTTP function off unless enabled, unique containers."""
    settings = {
        "AzureWebJobsStorage": azurite.connection_string,
        "TICK_SCHEDULE": "*/1 * * * * *",
        "SLOW_TICK_SCHEDULE": "*/1 * * * * *",
        "INBOUND_CONTAINER": unique("inbound"),
        "CSV_CONTAINER": unique("csv"),
        "POISON_CONTAINER": unique("poison"),
        "SLOW_CONTAINER": unique("slow"),
        "SDK_CONTAINER": unique("sdk"),
    }
    settings.update({f"AzureWebJobs.{name}.Disabled": "true" for name in NON_HTTP if name not in enable})
    settings.update(values)
    return settings


def sample_runner(settings: Mapping[str, str], recorder: Recorder, *, host_id: str, **options: Any) -> Runner:
    defaults: dict[str, Any] = {
        "port": 0,
        "app_root": APP_ROOT,
        "blob_poll_interval": 0.2,
        "standby_interval": 0.3,
        "shutdown_timeout": 10.0,
    }
    return Runner(build_app(recorder), settings=settings, host_id=host_id, **{**defaults, **options})


def blob_service(azurite: AzuriteInfo) -> BlobServiceClient:
    return BlobServiceClient.from_connection_string(azurite.connection_string)


def receipts(azurite: AzuriteInfo, host_id: str, function: str) -> list[dict[str, str]]:
    """Metadata of every receipt blob for one function (status, attempts...)."""
    container = blob_service(azurite).get_container_client("azure-webjobs-hosts")
    prefix = f"blobreceipts/{host_id}/{function}/"
    return [
        dict(b.metadata or {}) for b in container.list_blobs(name_starts_with=prefix, include=["metadata"])
    ]


def eventually(check: Callable[[], bool], timeout: float = 15, interval: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(interval)
    return check()
