"""Blob storage primitives every pipeline builds on: once-only writes, ETag-guarded JSON, leases, moves.

The app runs on many instances and every trigger is at-least-once, so each "do this once" decision is a
conditional write or a lease in storage, never a lock in memory:

- ``create_if_absent``: If-None-Match: * ; the first writer wins, later ones learn the blob existed.
- ``update_json``: read, change, write with If-Match: the blob's ETag; retried when another instance won.
- ``lease``: a renewable blob lease (a cross-instance mutex) released on exit, also on errors.
- ``copy_stream`` / ``move``: chunked copies through this process (constant memory), idempotent moves.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import IO, Any

from azure.core import MatchConditions
from azure.core.exceptions import (
    HttpResponseError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
)
from azure.storage.blob import (
    BlobClient,
    BlobLeaseClient,
    BlobServiceClient,
    ContainerClient,
    ContentSettings,
)

log = logging.getLogger(__name__)

JSON_CONTENT = ContentSettings(content_type="application/json; charset=utf-8")
COPY_CHUNK = 4 * 1024 * 1024


class LeaseUnavailableError(Exception):
    """Another instance holds the lease; the caller should skip or try again later."""


class ConcurrentUpdateError(Exception):
    """An ETag-guarded update kept losing to other writers and gave up."""


@dataclass(frozen=True)
class JsonBlob:
    value: Any
    etag: str


@contextmanager
def keep_lease(
    lease: BlobLeaseClient, label: str, renew_every: float, *, quiet_statuses: tuple[int, ...] = ()
) -> Iterator[None]:
    """Renew an acquired lease in the background for the ``with`` block, then release it.

    ``renew_every`` is a third of the lease's duration. A failed renewal that may be passing (a connection
    error, a timeout, a 5xx, 408/429) is tried again soon, until the lease would have lapsed since the last
    renewal; an answer that the lease is gone or taken (another 4xx, e.g. 409 after it expired and another
    instance leased the blob) stops renewing. Either is logged (the holder's next guarded write, or
    ``lease.renew()`` called before an irreversible step, fails); answers whose status is in
    ``quiet_statuses`` (e.g. 404 after the holder moved the blob) are expected, not logged.
    """
    stop = threading.Event()

    def renew() -> None:
        wait, renewed_at = renew_every, time.monotonic()
        while not stop.wait(wait):
            try:
                lease.renew()
            except HttpResponseError as exc:
                status = exc.status_code or 0
                if status < 500 and status not in (408, 429):  # gone or taken: renewing cannot help
                    if status not in quiet_statuses:
                        log.warning("lease on %s could not be renewed: %s", label, exc.reason)
                    return
                failure = f"HTTP {status} {exc.reason}"
            except Exception as exc:  # a connection error must not silently end the renewals
                failure = type(exc).__name__
            else:
                wait, renewed_at = renew_every, time.monotonic()
                continue
            if time.monotonic() - renewed_at >= 3 * renew_every:
                log.warning("lease on %s lapsed: renewing kept failing (%s)", label, failure)
                return
            wait = max(0.2, renew_every / 6)  # several more tries before the lease runs out
            log.info("lease on %s: renewal failed (%s); trying again in %.1fs", label, failure, wait)

    renewer = threading.Thread(target=renew, name=f"lease-{label[-40:]}", daemon=True)
    renewer.start()
    try:
        yield
    finally:
        stop.set()
        renewer.join(timeout=5)
        try:
            lease.release()
        except HttpResponseError as exc:
            if exc.status_code not in quiet_statuses:
                log.warning("lease on %s could not be released: %s", label, exc.reason)


class BlobStore:
    """Thin, typed helpers over one ``BlobServiceClient`` (thread-safe; share one per process)."""

    def __init__(self, service: BlobServiceClient) -> None:
        self.service = service
        self._known: set[str] = set()
        self._lock = threading.Lock()

    # -- containers

    def container(self, name: str) -> ContainerClient:
        """The container client, created on first use (idempotent across instances)."""
        client = self.service.get_container_client(name)
        with self._lock:
            known = name in self._known
        if not known:
            with suppress(ResourceExistsError):
                client.create_container()
            with self._lock:
                self._known.add(name)
        return client

    def blob(self, container: str, name: str) -> BlobClient:
        return self.container(container).get_blob_client(name)

    # -- once-only and guarded writes

    def create_if_absent(
        self,
        container: str,
        name: str,
        data: bytes | str | Iterable[bytes] | IO[bytes],
        *,
        metadata: dict[str, str] | None = None,
        content_settings: ContentSettings | None = None,
    ) -> bool:
        """Write the blob only if it does not exist; True when this call created it."""
        try:
            self.blob(container, name).upload_blob(
                data, overwrite=False, metadata=metadata, content_settings=content_settings
            )
        except ResourceExistsError:
            return False
        return True

    def read_json(self, container: str, name: str) -> JsonBlob | None:
        try:
            downloader = self.blob(container, name).download_blob()
        except ResourceNotFoundError:
            return None
        return JsonBlob(json.loads(downloader.readall()), str(downloader.properties.etag))

    def write_json(self, container: str, name: str, value: Any, *, etag: str | None = None) -> str:
        """Write JSON; with ``etag`` only if the blob still has it (else ResourceModifiedError)."""
        body = json.dumps(value, indent=2, sort_keys=True, default=str).encode("utf-8")
        kwargs: dict[str, Any] = {"overwrite": True, "content_settings": JSON_CONTENT}
        if etag is not None:
            kwargs.update(etag=etag, match_condition=MatchConditions.IfNotModified)
        result = self.blob(container, name).upload_blob(body, **kwargs)
        return str(result["etag"])

    def create_json(self, container: str, name: str, value: Any) -> bool:
        body = json.dumps(value, indent=2, sort_keys=True, default=str).encode("utf-8")
        return self.create_if_absent(container, name, body, content_settings=JSON_CONTENT)

    def update_json(
        self,
        container: str,
        name: str,
        change: Callable[[Any | None], Any],
        *,
        attempts: int = 20,
    ) -> Any:
        """Optimistic read-modify-write: ``change(current or None) -> new``; retried when another writer won.

        ``change`` must be a pure function of its input: it may run several times.
        """
        for attempt in range(attempts):
            current = self.read_json(container, name)
            new = change(None if current is None else current.value)
            try:
                if current is None:
                    if self.create_json(container, name, new):
                        return new
                else:
                    self.write_json(container, name, new, etag=current.etag)
                    return new
            except ResourceModifiedError:
                pass
            except HttpResponseError as exc:  # Azurite answers 412 without the typed error sometimes
                if exc.status_code != 412:
                    raise
            time.sleep(min(0.05 * (attempt + 1), 0.5))
        raise ConcurrentUpdateError(f"{container}/{name}: gave up after {attempts} concurrent updates")

    # -- leases

    @contextmanager
    def lease(
        self, container: str, name: str, *, seconds: int = 60, renew_every: float | None = None
    ) -> Iterator[BlobLeaseClient]:
        """Hold a lease on ``container/name`` (created empty if missing) for the ``with`` block.

        The lease is renewed in the background so work longer than ``seconds`` keeps it, and released on exit.
        If this process dies, the lease expires after ``seconds`` and another instance can take over.
        """
        blob = self.blob(container, name)
        self.create_if_absent(container, name, b"")
        try:
            lease = blob.acquire_lease(lease_duration=seconds)
        except HttpResponseError as exc:
            if exc.status_code == 409:
                raise LeaseUnavailableError(f"{container}/{name} is leased by another instance") from exc
            raise
        with keep_lease(lease, f"{container}/{name}", renew_every or seconds / 3):
            yield lease

    # -- streaming copies

    def copy_stream(
        self,
        source: BlobClient,
        container: str,
        name: str,
        *,
        overwrite: bool = False,
        metadata: dict[str, str] | None = None,
    ) -> bool:
        """Copy a blob through this process in chunks (constant memory); False if the target existed."""
        downloader = source.download_blob(max_concurrency=2)
        settings = ContentSettings(content_type=downloader.properties.content_settings.content_type)
        try:
            self.blob(container, name).upload_blob(
                downloader.chunks(),
                length=downloader.size,
                overwrite=overwrite,
                metadata=metadata if metadata is not None else downloader.properties.metadata,
                content_settings=settings,
                max_concurrency=2,
            )
        except ResourceExistsError:
            return False
        return True

    def move(self, container: str, name: str, to_container: str, to_name: str) -> None:
        """Move a blob; safe to repeat after a crash (an existing target is kept, the source deleted)."""
        source = self.blob(container, name)
        try:
            self.copy_stream(source, to_container, to_name)
        except ResourceNotFoundError:
            if self.blob(to_container, to_name).exists():
                return  # an earlier attempt already moved it
            raise
        with suppress(ResourceNotFoundError):
            source.delete_blob()
