"""Blob receipts: which blob versions a blob-triggered function has handled, shared by every runner.

One receipt blob per function and blob version, ``azure-webjobs-hosts/blobreceipts/<host-id>/<function>/
<etag>/<container>/<blob>`` like the host's, with its state in metadata (``status``, ``attempts``,
``lasterror``). The receipt is created with a conditional write (``If-None-Match: *``), and whoever holds
its lease owns the attempt, so one blob version is processed by one runner at a time and never again
once ``complete``. The attempt is counted *before* the function runs, so an attempt cut short by a crash
still counts; after ``max_attempts`` (the host's ``maxDequeueCount``, 5) the receipt is marked
``poisoned`` and a poison record is written to ``blobtrigger-poison/...`` (the host posts to the
``webjobs-blobtrigger-poison`` queue instead; the runner only needs blob storage). Each state change is
one metadata write, so a receipt is never half-recorded.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError
from azure.storage.blob import BlobClient, BlobServiceClient, ContentSettings

from runner.singleton import BlobLease, LeaseRegistry
from runner.storage import HOSTS_CONTAINER

__all__ = ["Busy", "Claim", "Done", "ReceiptStore"]

FINAL = ("complete", "poisoned", "superseded")


@dataclass(frozen=True)
class Done:
    status: str


@dataclass(frozen=True)
class Busy:
    """Another runner holds the receipt's lease right now."""


@dataclass
class Claim:
    """This runner owns the current attempt on one blob version until it records the result."""

    receipt: BlobClient
    lease: BlobLease
    function: str
    container: str
    blob_name: str
    etag: str
    attempts: int
    exhausted: bool


def _clean_etag(etag: str) -> str:
    return etag.strip('"')


def _ascii(text: str, limit: int = 256) -> str:
    flat = " ".join(text.split())
    return flat.encode("ascii", "replace").decode()[:limit]


class ReceiptStore:
    def __init__(
        self,
        service: BlobServiceClient,
        host_id: str,
        *,
        instance_id: str,
        registry: LeaseRegistry,
        lease_seconds: int = 30,
        max_attempts: int = 5,
    ) -> None:
        self.service, self.host_id, self.instance_id = service, host_id, instance_id
        self.registry, self.lease_seconds, self.max_attempts = registry, lease_seconds, max_attempts

    def receipt_path(self, function: str, container: str, blob_name: str, etag: str) -> str:
        return f"blobreceipts/{self.host_id}/{function}/{_clean_etag(etag)}/{container}/{blob_name}"

    def poison_path(self, function: str, container: str, blob_name: str, etag: str) -> str:
        tail = f"{container}/{blob_name}/{_clean_etag(etag)}.json"
        return f"blobtrigger-poison/{self.host_id}/{function}/{tail}"

    def _receipt(self, function: str, container: str, blob_name: str, etag: str) -> BlobClient:
        path = self.receipt_path(function, container, blob_name, etag)
        return self.service.get_blob_client(HOSTS_CONTAINER, path)

    def status(self, function: str, container: str, blob_name: str, etag: str) -> str | None:
        """The recorded status, or None when there is no receipt yet."""
        try:
            props = self._receipt(function, container, blob_name, etag).get_blob_properties()
        except ResourceNotFoundError:
            return None
        return str(props.metadata.get("status", "incomplete"))

    def claim(self, function: str, container: str, blob_name: str, etag: str) -> Claim | Done | Busy:
        """Own the next attempt on this blob version, or say why not (already done, or busy elsewhere)."""
        receipt = self._receipt(function, container, blob_name, etag)
        try:  # fast path: one read answers "done" or "busy" without touching the lease
            props = receipt.get_blob_properties()
        except ResourceNotFoundError:
            with contextlib.suppress(ResourceExistsError):
                receipt.upload_blob(
                    b"", if_none_match="*", metadata={"status": "incomplete", "attempts": "0"}
                )
        else:
            if props.metadata.get("status") in FINAL:
                return Done(str(props.metadata["status"]))
            if props.lease.state == "leased":
                return Busy()
        lease = BlobLease(receipt, duration=self.lease_seconds)
        if not lease.acquire():
            return Busy()
        self.registry.add(lease)
        try:
            metadata = receipt.get_blob_properties(lease=lease.client).metadata
            status = metadata.get("status", "incomplete")
            if status in FINAL:
                self._let_go(lease)
                return Done(status)
            attempts = int(metadata.get("attempts", "0") or 0)
            exhausted = attempts >= self.max_attempts
            if not exhausted:
                attempts += 1
                metadata.update(
                    status="incomplete",
                    attempts=str(attempts),
                    instance=_ascii(self.instance_id),
                    started=_now(),
                )
                receipt.set_blob_metadata(metadata, lease=lease.client)
        except Exception:
            self._let_go(lease)
            raise
        return Claim(receipt, lease, function, container, blob_name, etag, attempts, exhausted)

    def complete(self, claim: Claim, status: str = "complete") -> None:
        self._record(claim, status=status, finished=_now())
        self._let_go(claim.lease)

    def failed(self, claim: Claim, error: str) -> bool:
        """Record a failed attempt; answers True when it was the last one (the blob is now poisoned)."""
        if claim.attempts < self.max_attempts:
            self._record(claim, status="incomplete", lasterror=_ascii(error))
            self._let_go(claim.lease)
            return False
        self.poison(claim, error)
        return True

    def poison(self, claim: Claim, error: str) -> None:
        record: dict[str, Any] = {
            "FunctionId": claim.function,
            "BlobType": "BlockBlob",
            "ContainerName": claim.container,
            "BlobName": claim.blob_name,
            "ETag": claim.etag,
            "Attempts": claim.attempts,
            "LastError": error,
            "HostId": self.host_id,
            "InstanceId": self.instance_id,
            "PoisonedAt": _now(),
        }
        path = self.poison_path(claim.function, claim.container, claim.blob_name, claim.etag)
        self.service.get_blob_client(HOSTS_CONTAINER, path).upload_blob(
            json.dumps(record, indent=2).encode(),
            overwrite=True,
            content_settings=ContentSettings("application/json"),
        )
        self._record(claim, status="poisoned", lasterror=_ascii(error), finished=_now())
        self._let_go(claim.lease)

    def abandon(self, claim: Claim) -> None:
        """Let go without recording anything: the attempt stays counted and the blob will be retried."""
        self._let_go(claim.lease)

    def _record(self, claim: Claim, **changes: str) -> None:
        client = claim.lease.client
        if client is None:
            raise RuntimeError(f"lease on the receipt for {claim.container}/{claim.blob_name} was lost")
        metadata = claim.receipt.get_blob_properties(lease=client).metadata
        metadata.update(changes)
        try:
            claim.receipt.set_blob_metadata(metadata, lease=client)
        except HttpResponseError as exc:
            raise RuntimeError(
                f"could not record the receipt for {claim.container}/{claim.blob_name}: {exc.reason or exc}"
            ) from exc

    def _let_go(self, lease: BlobLease) -> None:
        lease.release()
        self.registry.discard(lease)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")
