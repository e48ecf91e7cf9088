"""Bounded blob listings: every listing stops at the cap and says so, and a missing container is empty.

An overview is asked for on demand (a page refresh), so it must cost the same on a quiet day and after a
backlog of a million files: it lists at most ``cap`` names per listing and reads only the few records
it shows.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from azure.core.exceptions import ResourceNotFoundError
from azure.storage.blob import BlobPrefix, BlobServiceClient

__all__ = ["Listed", "Lister"]

_PAGE = 1000
_MAX_RECORD_BYTES = 1024 * 1024


@dataclass(frozen=True)
class Listed:
    container: str
    name: str
    last_modified: datetime
    size: int

    @property
    def path(self) -> str:
        return f"{self.container}/{self.name}"


class Lister:
    """Listings and small JSON reads for one overview; ``notes`` collects every listing that was cut."""

    def __init__(self, service: BlobServiceClient, cap: int) -> None:
        self.service = service
        self.cap = cap
        self.notes: list[str] = []

    def blobs(self, container: str, prefix: str = "") -> list[Listed]:
        """Up to ``cap`` blobs of ``container`` under ``prefix`` (listing order: by name)."""
        client = self.service.get_container_client(container)
        found: list[Listed] = []
        try:
            for page in client.list_blobs(
                name_starts_with=prefix or None, results_per_page=min(_PAGE, self.cap)
            ).by_page():
                for blob in page:
                    if len(found) >= self.cap:
                        self._cut(container, prefix)
                        return found
                    modified = blob.last_modified or datetime.fromtimestamp(0, UTC)
                    found.append(Listed(container, str(blob.name), modified, int(blob.size or 0)))
        except ResourceNotFoundError:  # the container does not exist yet: nothing there
            return []
        return found

    def folders(self, container: str, prefix: str = "") -> list[str]:
        """The virtual folders directly under ``prefix`` (with their trailing ``/``), up to ``cap``."""
        client = self.service.get_container_client(container)
        found: list[str] = []
        try:
            for item in client.walk_blobs(name_starts_with=prefix or None, delimiter="/"):
                if len(found) >= self.cap:
                    self._cut(container, prefix)
                    break
                if isinstance(item, BlobPrefix):
                    found.append(str(item.name))
        except ResourceNotFoundError:
            return []
        return found

    def read_json(self, container: str, name: str) -> dict[str, Any] | None:
        """A small JSON object (None when missing, too big or not an object)."""
        try:
            data = (
                self.service.get_blob_client(container, name)
                .download_blob(offset=0, length=_MAX_RECORD_BYTES + 1)
                .readall()
            )
        except ResourceNotFoundError:
            return None
        if len(data) > _MAX_RECORD_BYTES:
            return None
        try:
            value = json.loads(data)
        except ValueError:
            return None
        return value if isinstance(value, dict) else None

    def _cut(self, container: str, prefix: str) -> None:
        where = f"{container}/{prefix}" if prefix else container
        self.notes.append(
            f"listing of {where} stopped at {self.cap} blobs (OVERVIEW_LIST_CAP): counts are partial"
        )
