"""Bounded blob listings: every listing stops at the cap and says so, and a missing container is empty.

An overview is asked for on demand (a page refresh), so it must cost the same on a quiet day and after a
backlog of a million files: it lists at most ``cap`` names per listing and reads only the few records
it shows. It must also answer when storage is slow or down (a page has ~230 s before Azure's front end
gives up, an operator less): every storage call is **one** attempt (the SDK's default retries take minutes
to give up on a dead endpoint) with short connection and read timeouts, no call starts after the
storage budget (``OVERVIEW_STORAGE_SECONDS``), and after a connection failure no further call is made —
the parts not gathered are reported as unknown (``StorageUnavailableError``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from azure.core.exceptions import ResourceNotFoundError, ServiceRequestError, ServiceResponseError
from azure.storage.blob import BlobPrefix, BlobServiceClient

from shared.redact import redact_text

__all__ = ["Listed", "Lister", "StorageUnavailableError"]

_PAGE = 1000
_MAX_RECORD_BYTES = 1024 * 1024
_CONNECT_SECONDS = 3.0
_READ_SECONDS = 10.0


class StorageUnavailableError(RuntimeError):
    """Storage did not answer (or not within the overview's budget): the part is unknown."""


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

    def __init__(
        self,
        service: BlobServiceClient,
        cap: int,
        *,
        seconds: float = 20.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.service = service
        self.cap = cap
        self.notes: list[str] = []
        self.seconds = seconds
        self.clock = clock
        self.deadline = clock() + seconds
        self.calls = 0  # storage requests started (pages included)
        self.unreachable: str | None = None  # why storage was given up on

    def _limits(self) -> dict[str, Any]:
        """Per-request options of the next storage call: one attempt, within what is left of the budget."""
        if self.unreachable is not None:
            raise StorageUnavailableError(f"not asked: {self.unreachable}")
        remaining = self.deadline - self.clock()
        if remaining <= 0:
            raise StorageUnavailableError(
                f"storage did not answer within OVERVIEW_STORAGE_SECONDS ({self.seconds:g} s)"
            )
        self.calls += 1
        return {
            "retry_total": 0,
            "connection_timeout": min(_CONNECT_SECONDS, remaining),
            "read_timeout": min(_READ_SECONDS, remaining),
            "timeout": max(1, int(min(_READ_SECONDS, remaining))),  # the service's own limit
        }

    def _gave_up(self, exc: Exception) -> StorageUnavailableError:
        first_line = (str(exc) or type(exc).__name__).splitlines()[0]
        self.unreachable = f"blob storage unreachable ({type(exc).__name__}: {redact_text(first_line)[:200]})"
        return StorageUnavailableError(self.unreachable)

    def blobs(self, container: str, prefix: str = "") -> list[Listed]:
        """Up to ``cap`` blobs of ``container`` under ``prefix`` (listing order: by name)."""
        client = self.service.get_container_client(container)
        found: list[Listed] = []
        try:
            pages = client.list_blobs(
                name_starts_with=prefix or None, results_per_page=min(_PAGE, self.cap), **self._limits()
            ).by_page()
            for page in pages:
                for blob in page:
                    if len(found) >= self.cap:
                        self._cut(container, prefix)
                        return found
                    modified = blob.last_modified or datetime.fromtimestamp(0, UTC)
                    found.append(Listed(container, str(blob.name), modified, int(blob.size or 0)))
                if getattr(pages, "continuation_token", None):
                    self._limits()  # the next page is one more call: within the budget, or not at all
        except ResourceNotFoundError:  # the container does not exist yet: nothing there
            return []
        except (ServiceRequestError, ServiceResponseError) as exc:
            raise self._gave_up(exc) from exc
        return found

    def folders(self, container: str, prefix: str = "") -> list[str]:
        """The virtual folders directly under ``prefix`` (with their trailing ``/``), up to ``cap``."""
        client = self.service.get_container_client(container)
        found: list[str] = []
        try:
            for item in client.walk_blobs(name_starts_with=prefix or None, delimiter="/", **self._limits()):
                if len(found) >= self.cap:
                    self._cut(container, prefix)
                    break
                if isinstance(item, BlobPrefix):
                    found.append(str(item.name))
        except ResourceNotFoundError:
            return []
        except (ServiceRequestError, ServiceResponseError) as exc:
            raise self._gave_up(exc) from exc
        return found

    def read_json(self, container: str, name: str) -> dict[str, Any] | None:
        """A small JSON object (None when missing, too big or not an object)."""
        try:
            data = (
                self.service.get_blob_client(container, name)
                .download_blob(offset=0, length=_MAX_RECORD_BYTES + 1, **self._limits())
                .readall()
            )
        except ResourceNotFoundError:
            return None
        except (ServiceRequestError, ServiceResponseError) as exc:
            raise self._gave_up(exc) from exc
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
