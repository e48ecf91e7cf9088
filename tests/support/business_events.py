"""Shared helpers for the business-events tests: app settings on the local stack, fresh events."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from azure.storage.blob import BlobServiceClient

from shared.context import AppContext
from shared.events.settings import BusinessEventProcessingSettings, BusinessEventSettings
from shared.settings import Settings
from shared.settings_reader import SettingsSection
from tests.support.app_env import stack_env
from tests.support.stack import AzuriteInfo, EmulatorInfo


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def events_env(emulator: EmulatorInfo, azurite: AzuriteInfo, **overrides: str) -> dict[str, str]:
    """App settings for the local stack (``stack_env``), with containers of this test's own."""
    containers = {
        "BUSINESS_EVENTS_CONTAINER": unique("events"),
        "BUSINESS_EVENTS_STATE_CONTAINER": unique("state"),
        "BUSINESS_EVENTS_POISON_CONTAINER": unique("poison"),
        "BUSINESS_EVENTS_ENRICHED_CONTAINER": unique("enriched"),
    }
    return stack_env(emulator, azurite, D365_RETRY_MAX_SECONDS="10", **{**containers, **overrides})


SECTIONS: tuple[type[SettingsSection], ...] = (BusinessEventSettings, BusinessEventProcessingSettings)


@contextmanager
def events_context(
    env: dict[str, str], sections: tuple[type[SettingsSection], ...] = SECTIONS
) -> Iterator[AppContext]:
    """The app context for ``env``; ``sections`` are validated at once (as a start-up check would)."""
    context = AppContext.from_settings(Settings.from_env(env, sections=sections))
    try:
        yield context
    finally:
        context.close()


def make_event(**fields: Any) -> dict[str, Any]:
    """A new-envelope event with a fresh EventId (fields override)."""
    event: dict[str, Any] = {
        "BusinessEventId": "SalesInvoicePostedBusinessEvent",
        "BusinessEventLegalEntity": "USMF",
        "ContextRecordSubject": "",
        "ControlNumber": 5637611083,
        "EventId": str(uuid.uuid4()).upper(),
        "EventTime": "/Date(1672408275000)/",
        "EventTimeIso8601": "2022-12-30T13:51:15.2942742Z",
        "InvoiceId": "CIV-000123",
        "MajorVersion": 0,
        "MinorVersion": 0,
    }
    event.update(fields)
    return event


def body_of(event: dict[str, Any]) -> bytes:
    return json.dumps(event, separators=(",", ":")).encode()


def blob_names(azurite: AzuriteInfo, container: str, prefix: str = "") -> list[str]:
    service = BlobServiceClient.from_connection_string(azurite.connection_string)
    client = service.get_container_client(container)
    if not client.exists():
        return []
    return sorted(b.name for b in client.list_blobs(name_starts_with=prefix or None))


def read_blob(azurite: AzuriteInfo, container: str, name: str) -> tuple[bytes, dict[str, str]]:
    service = BlobServiceClient.from_connection_string(azurite.connection_string)
    downloader = service.get_blob_client(container, name).download_blob()
    return downloader.readall(), dict(downloader.properties.metadata or {})


def read_json(azurite: AzuriteInfo, container: str, name: str) -> Any:
    return json.loads(read_blob(azurite, container, name)[0])
