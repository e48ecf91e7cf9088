"""Blob leases as the host's singleton locks: one holder at a time across every runner on the storage account.

A :class:`BlobLease` wraps one lease on one blob (created empty when it is a lock blob). Holders keep it
alive with :func:`keep_renewed` while they work; a lease that cannot be renewed is reported lost so the
holder stops acting on it. Leases last 15-60 s (the storage service's limits), so a crashed holder's lock
frees itself; a clean shutdown releases it at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import uuid

from azure.core.exceptions import AzureError, HttpResponseError, ResourceExistsError, ResourceNotFoundError
from azure.storage.blob import BlobClient, BlobLeaseClient

from runner.storage import error_text

__all__ = ["BlobLease", "LeaseRegistry", "keep_renewed"]

log = logging.getLogger("runner.singleton")


class BlobLease:
    """One lease on one blob. ``acquire`` answers False (not an error) when someone else holds it."""

    def __init__(self, blob: BlobClient, *, duration: int = 15, create: bool = False) -> None:
        if not 15 <= duration <= 60:
            raise ValueError("lease duration must be 15-60 seconds")
        self.blob = blob
        self.duration = duration
        self._create = create
        self._client: BlobLeaseClient | None = None

    @property
    def client(self) -> BlobLeaseClient | None:
        return self._client

    @property
    def held(self) -> bool:
        return self._client is not None

    def acquire(self) -> bool:
        client = BlobLeaseClient(self.blob, lease_id=str(uuid.uuid4()))
        for _ in range(2):
            try:
                client.acquire(lease_duration=self.duration)
            except ResourceNotFoundError:
                if not self._create:
                    return False
                with contextlib.suppress(ResourceExistsError):
                    self.blob.upload_blob(b"", if_none_match="*")
                continue
            except HttpResponseError as exc:
                if exc.status_code == 409:  # LeaseAlreadyPresent
                    return False
                raise
            self._client = client
            return True
        return False

    def renew(self) -> bool:
        client = self._client
        if client is None:
            return False
        try:
            client.renew()
        except AzureError as exc:
            log.warning("lease on %s lost: %s", self.blob.blob_name, error_text(exc))
            self._client = None
            return False
        return True

    def release(self) -> None:
        client, self._client = self._client, None
        if client is None:
            return
        try:
            client.release()
        except AzureError as exc:  # already expired or taken, or storage gone: it expires by itself
            log.debug("releasing lease on %s: %s", self.blob.blob_name, error_text(exc))


class LeaseRegistry:
    """Every lease this runner holds, so shutdown can release what interrupted work still holds."""

    def __init__(self) -> None:
        self._leases: set[BlobLease] = set()
        self._lock = threading.Lock()

    def add(self, lease: BlobLease) -> None:
        with self._lock:
            self._leases.add(lease)

    def discard(self, lease: BlobLease) -> None:
        with self._lock:
            self._leases.discard(lease)

    def release_all(self) -> int:
        with self._lock:
            leases, self._leases = list(self._leases), set()
        for lease in leases:
            lease.release()
        return len(leases)


async def keep_renewed(lease: BlobLease, lost: asyncio.Event) -> None:
    """Renew ``lease`` every third of its duration until cancelled; set ``lost`` if a renewal fails."""
    while True:
        await asyncio.sleep(lease.duration / 3)
        if not await asyncio.to_thread(lease.renew):
            lost.set()
            return
