"""Blob storage access for the runner: connections as the host resolves them, and small JSON-blob helpers.

The runner keeps its state where the host keeps it: ``azure-webjobs-hosts`` (blob receipts, timer
schedule status, singleton locks, poison records) and ``azure-webjobs-secrets`` (function keys).
Connection names resolve like the host's: ``<name>`` or ``AzureWebJobs<name>`` as a connection string,
or the identity form ``<name>__blobServiceUri`` / ``__serviceUri`` / ``__accountName`` with
``__credential=managedidentity`` and ``__clientId``.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.storage.blob import BlobClient, BlobServiceClient, ContentSettings, LinearRetry

from runner.settings import SettingsError

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential
    from azure.storage.blob import BlobLeaseClient

__all__ = [
    "HOSTS_CONTAINER",
    "SECRETS_CONTAINER",
    "ensure_container",
    "error_text",
    "read_json",
    "service_for_connection",
    "service_from_connection_string",
    "write_json",
]

HOSTS_CONTAINER = "azure-webjobs-hosts"
SECRETS_CONTAINER = "azure-webjobs-secrets"
DEFAULT_CONNECTION = "AzureWebJobsStorage"
# Azurite 3.35 knows API versions up to this one; pinning it for loopback endpoints lets the runner work
# with an Azurite started without --skipApiVersionCheck (the SDK's newer default would be refused).
LOOPBACK_API_VERSION = "2025-11-05"
# Storage's default retry waits 15 s and more between tries; a local runner should notice trouble quickly
# (a failed poll is simply repeated at the next poll).
_CLIENT_OPTIONS: dict[str, Any] = {
    "retry_policy": LinearRetry(backoff=1, random_jitter_range=1, retry_total=2),
    "connection_timeout": 10,
}


def _is_loopback(url: str) -> bool:
    return (urlsplit(url).hostname or "") in ("127.0.0.1", "localhost", "::1")


def service_from_connection_string(connection_string: str) -> BlobServiceClient:
    service = BlobServiceClient.from_connection_string(connection_string, **_CLIENT_OPTIONS)
    if _is_loopback(service.url):
        service = BlobServiceClient.from_connection_string(
            connection_string, api_version=LOOPBACK_API_VERSION, **_CLIENT_OPTIONS
        )
    return service


def _credential(prefix: str, settings: Mapping[str, str]) -> TokenCredential:
    from azure.identity import DefaultAzureCredential, ManagedIdentityCredential

    client_id = settings.get(f"{prefix}__clientId")
    if settings.get(f"{prefix}__credential", "").lower() == "managedidentity":
        return ManagedIdentityCredential(client_id=client_id)
    return DefaultAzureCredential(managed_identity_client_id=client_id)


def service_for_connection(name: str | None, settings: Mapping[str, str]) -> BlobServiceClient:
    """The blob service a binding's ``connection`` names (``AzureWebJobsStorage`` when empty)."""
    name = name or DEFAULT_CONNECTION
    for candidate in (name, f"AzureWebJobs{name}"):
        value = settings.get(candidate)
        if value:
            return service_from_connection_string(value)
    for candidate in (name, f"AzureWebJobs{name}"):
        uri = settings.get(f"{candidate}__blobServiceUri") or settings.get(f"{candidate}__serviceUri")
        account = settings.get(f"{candidate}__accountName")
        if account and not uri:
            uri = f"https://{account}.blob.core.windows.net"
        if uri:
            options: dict[str, Any] = dict(_CLIENT_OPTIONS)
            if _is_loopback(uri):
                options["api_version"] = LOOPBACK_API_VERSION
            return BlobServiceClient(uri, credential=_credential(candidate, settings), **options)
    raise SettingsError(
        f"storage connection {name!r} is not configured: set {name} to a connection string, or "
        f"{name}__blobServiceUri / {name}__accountName for an identity-based connection"
    )


def error_text(exc: BaseException) -> str:
    """A storage error in one line (the SDK's messages run to many lines)."""
    return str(getattr(exc, "reason", None) or exc).splitlines()[0]


def ensure_container(service: BlobServiceClient, name: str) -> None:
    with contextlib.suppress(ResourceExistsError):
        service.create_container(name)


def read_json(blob: BlobClient, *, lease: BlobLeaseClient | None = None) -> tuple[Any, str | None]:
    """The blob's JSON document and ETag, or ``(None, None)`` when the blob does not exist."""
    try:
        downloader = blob.download_blob(lease=lease) if lease else blob.download_blob()
        data = downloader.readall()
    except ResourceNotFoundError:
        return None, None
    return json.loads(data), downloader.properties.etag


def write_json(
    blob: BlobClient,
    document: Any,
    *,
    etag: str | None = None,
    create_only: bool = False,
    lease: BlobLeaseClient | None = None,
) -> str:
    """Write JSON; ``etag`` makes it conditional (412 if changed), ``create_only`` (409 if present)."""
    kwargs: dict[str, Any] = {"overwrite": True, "content_settings": ContentSettings("application/json")}
    if create_only:
        kwargs["if_none_match"] = "*"
    elif etag:
        kwargs["if_match"] = etag
    if lease is not None:
        kwargs["lease"] = lease
    result = blob.upload_blob(json.dumps(document, indent=2).encode(), **kwargs)
    return str(result["etag"])
