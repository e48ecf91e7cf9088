"""The environment's DMF blob container (``dmf``, ref §3.3) in Azurite, and the SAS URLs handed to callers.

Callers upload packages with ``PUT <BlobUrl>`` + ``x-ms-blob-type: BlockBlob`` and download exports and error
files with a plain ``GET`` (no Authorization): the SAS in the URL is the only credential, as in D365.
F&O deletes these blobs after seven days (ref §3.1); the emulator keeps them until Azurite's data is removed.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any
from urllib.parse import unquote, urlsplit

from azure.core.exceptions import AzureError, ResourceExistsError, ResourceNotFoundError
from azure.storage.blob import (
    BlobSasPermissions,
    BlobServiceClient,
    ContentSettings,
    LinearRetry,
    generate_blob_sas,
)

from emulator.dmf.model import DmfError

CONTAINER = "dmf"
DEFAULT_CONNECTION_STRING = "UseDevelopmentStorage=true"  # Azurite's devstoreaccount1 on 127.0.0.1:10000


class DmfBlobs:
    """Blob access for the DMF: account-key access for the emulator itself, SAS URLs for callers."""

    def __init__(self, connection_string: str) -> None:
        # Few, fast retries: a missing Azurite should fail the call quickly, not after the SDK's 15 s backoff.
        self.service = BlobServiceClient.from_connection_string(
            connection_string,
            retry_policy=LinearRetry(backoff=1, random_jitter_range=0, retry_total=1),
            connection_timeout=5,
            read_timeout=60,
        )
        self.container = self.service.get_container_client(CONTAINER)
        self._container_ready = False
        key = getattr(self.service.credential, "account_key", None)
        if not key:
            raise ValueError("the DMF blob connection string must carry an AccountKey (SAS URLs need it)")
        self._account_key: str = key

    @property
    def endpoint(self) -> str:
        return str(self.service.url).rstrip("/")

    def _ensure_container(self) -> None:
        if self._container_ready:
            return
        try:
            self.container.create_container()
        except ResourceExistsError:
            pass
        except AzureError as exc:
            raise DmfError(f"The Azure storage of the environment is not reachable: {exc}", 500) from None
        self._container_ready = True

    def sas_url(self, blob_name: str, *, write: bool, expiry_seconds: int) -> str:
        self._ensure_container()
        expiry = datetime.now(UTC) + timedelta(seconds=max(60, expiry_seconds))
        permission = BlobSasPermissions(read=True, write=write, create=write)
        sas = generate_blob_sas(
            self.service.account_name or "",
            CONTAINER,
            blob_name,
            account_key=self._account_key,
            permission=permission,
            expiry=expiry,
            start=datetime.now(UTC) - timedelta(minutes=5),
        )
        return f"{self.container.get_blob_client(blob_name).url}?{sas}"

    def blob_name_from_url(self, url: str) -> str | None:
        """The blob a ``packageUrl`` names in this container (SAS ignored), else None."""
        parts, ours = urlsplit(url), urlsplit(self.endpoint)
        if parts.netloc.lower() != ours.netloc.lower():
            return None
        prefix = f"{ours.path.rstrip('/')}/{CONTAINER}/"
        if not parts.path.startswith(prefix):
            return None
        name = unquote(parts.path[len(prefix) :])
        return name or None

    def download_to(self, blob_name: str, target: IO[bytes]) -> int:
        """Stream a blob into ``target``; DmfError when it is missing or storage is down."""
        self._ensure_container()
        try:
            downloader = self.container.get_blob_client(blob_name).download_blob()
            return int(downloader.readinto(target))
        except ResourceNotFoundError:
            raise DmfError(f"The package '{blob_name}' was not found in the Azure storage.") from None
        except AzureError as exc:
            raise DmfError(f"The package could not be read from the Azure storage: {exc}", 500) from None

    def upload(self, blob_name: str, data: bytes | IO[bytes] | Path, content_type: str) -> None:
        self._ensure_container()
        settings = ContentSettings(content_type=content_type)
        try:
            if isinstance(data, Path):
                with data.open("rb") as stream:
                    self.container.upload_blob(blob_name, stream, overwrite=True, content_settings=settings)
            else:
                self.container.upload_blob(blob_name, data, overwrite=True, content_settings=settings)
        except AzureError as exc:
            raise DmfError(f"The file could not be written to the Azure storage: {exc}", 500) from None

    def list(self, prefix: str | None = None) -> list[dict[str, Any]]:
        self._ensure_container()
        return [
            {
                "name": blob.name,
                "size": blob.size,
                "last_modified": blob.last_modified.isoformat() if blob.last_modified else None,
                "content_type": blob.content_settings.content_type if blob.content_settings else None,
            }
            for blob in self.container.list_blobs(name_starts_with=prefix)
        ]

    def delete(self, blob_name: str) -> None:
        try:
            self.container.delete_blob(blob_name)
        except ResourceNotFoundError:
            pass
        except AzureError as exc:
            raise DmfError(f"The blob could not be deleted: {exc}", 500) from None


def unique_blob_name(requested: str | None) -> str:
    """GetAzureWriteUrl's blob: the caller's ``uniqueFileName`` (a GUID when empty)."""
    name = (requested or "").strip().lstrip("/")
    return name or str(uuid.uuid4())
