"""Blob triggers: watch a container for the declared path and invoke the function once per blob version.

The trigger path is ``container/<blob template>``: the container is literal, the template may hold
literal text and ``{name}``-style parameters (``inbound/{name}``, ``inbound/{name}.csv``,
``in/{folder}/{file}.json``); parameters match across ``/``. Each poll lists the container from the
template's literal prefix and hands every matching blob version to :class:`ReceiptStore` first, so an
attempt is owned by exactly one runner and a handled version is never handled again, across restarts
and runner processes. Both ``source`` values are accepted; locally both are served by this polling scan
(Event Grid cannot deliver to a laptop), which is documented and logged at start.

The function receives an ``InputStream`` that reads the blob lazily from storage (pinned to the ETag it
was triggered for), or ``bytes``/``str`` when the parameter is annotated so. A parameter annotated with an
SDK type of ``azurefunctions-extensions-bindings-blob`` (``BlobClient``, ``ContainerClient``,
``StorageStreamDownloader``) gets what the worker's converter makes of the host's reference: the
``azure.storage.blob`` client (or download) for the blob. The runner builds it from the connection it
already resolved, where the extension reads the connection from environment variables; the objects and
their API are the same. (The worker recognises these annotations while indexing and marks the binding
``properties.SupportsDeferredBinding``; ``get_function_json()`` does not carry that mark, so the
runner looks at the annotation too.)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import AzureError, HttpResponseError, ResourceNotFoundError
from azure.functions.blob import InputStream
from azure.storage.blob import BlobServiceClient, StorageStreamDownloader

from runner.discovery import FunctionSpec
from runner.invocation import Invoker, Outcome
from runner.receipts import Busy, Claim, Done, ReceiptStore
from runner.singleton import keep_renewed
from runner.storage import error_text

__all__ = ["BlobInputStream", "BlobPath", "BlobPathError", "BlobWatcher", "parse_blob_path"]

log = logging.getLogger("runner.blobs")
_PARAM = re.compile(r"\{([A-Za-z_][A-Za-z0-9_-]*)\}")


class BlobPathError(ValueError):
    """A blob trigger path the runner cannot watch."""


@dataclass(frozen=True)
class BlobPath:
    container: str
    template: str
    prefix: str
    pattern: re.Pattern[str]

    def match(self, blob_name: str) -> dict[str, str] | None:
        found = self.pattern.fullmatch(blob_name)
        return found.groupdict() if found else None

    def __str__(self) -> str:
        return f"{self.container}/{self.template}"


def parse_blob_path(path: str) -> BlobPath:
    """Split ``container/template`` and compile the template (after ``%SETTING%`` resolution)."""
    container, _, template = path.strip().strip("/").partition("/")
    if not container or "{" in container or "%" in container:
        raise BlobPathError(f"{path!r}: the container part must be a literal container name")
    if not re.fullmatch(r"[a-z0-9](?:[a-z0-9]|-(?=[a-z0-9])){2,62}", container):
        raise BlobPathError(f"{path!r}: {container!r} is not a valid container name")
    regex, position, names = "", 0, set()
    for found in _PARAM.finditer(template):
        name = found.group(1)
        if name in names:
            raise BlobPathError(f"{path!r}: parameter {{{name}}} appears twice")
        names.add(name)
        regex += re.escape(template[position : found.start()]) + f"(?P<{name.replace('-', '_')}>.+)"
        position = found.end()
    regex += re.escape(template[position:])
    if not template:
        regex = ".+"
    prefix = template.split("{", 1)[0]
    return BlobPath(container, template, prefix, re.compile(regex, re.DOTALL))


class BlobInputStream(InputStream):
    """``func.InputStream`` over a storage download: bytes are fetched as the function reads them."""

    def __init__(self, downloader: StorageStreamDownloader[bytes], **details: Any) -> None:
        super().__init__(data=b"", **details)
        self._downloader = downloader

    def read(self, size: int = -1) -> bytes:  # type: ignore[override]
        return self._downloader.read(size if size is not None and size >= 0 else -1)

    read1 = read


def _wanted_type(spec: FunctionSpec) -> Any:
    try:
        hints = typing.get_type_hints(spec.user_function)
    except Exception:
        return None
    return hints.get(spec.trigger_arg)


def sdk_type_kind(as_type: Any) -> str | None:
    """``client``/``container``/``downloader`` for the blob extension's SDK types, else ``None``."""
    if not isinstance(as_type, type) or not as_type.__module__.startswith("azurefunctions.extensions."):
        return None
    try:
        from azurefunctions.extensions.bindings import blob as sdk  # type: ignore[import-untyped]
    except ImportError:
        return None
    kinds = {
        sdk.BlobClient: "client",
        sdk.ContainerClient: "container",
        sdk.StorageStreamDownloader: "downloader",
    }
    return kinds.get(as_type)


def open_blob(service: BlobServiceClient, container: str, name: str, etag: str | None, as_type: Any) -> Any:
    """The trigger argument for one blob version (lazy stream, bytes/str or an SDK type, as annotated)."""
    blob = service.get_blob_client(container, name)
    sdk_kind = sdk_type_kind(as_type)
    if sdk_kind in ("client", "container"):
        if etag:  # still the version that triggered? (404/412 otherwise: superseded, as for a stream)
            blob.get_blob_properties(etag=etag, match_condition=MatchConditions.IfNotModified)
        return blob if sdk_kind == "client" else service.get_container_client(container)
    if etag:
        downloader = blob.download_blob(etag=etag, match_condition=MatchConditions.IfNotModified)
    else:
        downloader = blob.download_blob()
    if as_type is bytes:
        return downloader.readall()
    if as_type is str:
        return downloader.readall().decode("utf-8")
    if sdk_kind == "downloader":
        return downloader
    props = downloader.properties
    settings = props.content_settings
    properties = {
        "BlobType": "BlockBlob",
        "ContentType": settings.content_type,
        "ETag": props.etag,
        "LastModified": props.last_modified.isoformat() if props.last_modified else None,
        "Length": props.size,
        "ContentEncoding": settings.content_encoding,
    }
    return BlobInputStream(
        downloader,
        name=f"{container}/{name}",
        uri=blob.url,
        length=props.size,
        metadata=dict(props.metadata or {}),
        blob_properties=properties,
    )


class BlobWatcher:
    """Polls one blob-triggered function's container and processes each new blob version once."""

    def __init__(
        self,
        spec: FunctionSpec,
        *,
        path: BlobPath,
        service: BlobServiceClient,
        receipts: ReceiptStore,
        invoker: Invoker,
        poll_interval: float,
        stopping: asyncio.Event,
        concurrency: int = 8,
    ) -> None:
        self.spec, self.path, self.service, self.receipts = spec, path, service, receipts
        self.invoker, self.poll_interval, self.stopping = invoker, poll_interval, stopping
        self._slots = asyncio.Semaphore(concurrency)
        self._done: set[tuple[str, str]] = set()
        self._active: dict[tuple[str, str], asyncio.Task[None]] = {}
        self._as_type = _wanted_type(spec)
        self._last_error = ""

    @property
    def tasks(self) -> list[asyncio.Task[None]]:
        return list(self._active.values())

    async def run(self) -> None:
        while not self.stopping.is_set():
            try:
                listing = await asyncio.to_thread(self._list)
            except AzureError as exc:
                self._warn_once(f"listing {self.path.container} failed: {error_text(exc)}")
            else:
                self._last_error = ""
                self._dispatch(listing)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), self.poll_interval)

    def _warn_once(self, message: str) -> None:
        if message != self._last_error:
            log.warning("%s: %s", self.spec.name, message)
        self._last_error = message

    def _list(self) -> list[tuple[str, str]]:
        container = self.service.get_container_client(self.path.container)
        try:
            blobs = container.list_blobs(name_starts_with=self.path.prefix or None)
            return [(b.name, str(b.etag)) for b in blobs if self.path.match(b.name) is not None]
        except ResourceNotFoundError:
            return []

    def _dispatch(self, listing: list[tuple[str, str]]) -> None:
        seen = set(listing)
        self._done &= seen
        for key in listing:
            if key in self._done or key in self._active or self.stopping.is_set():
                continue
            task = asyncio.ensure_future(self._process(*key))
            self._active[key] = task
            task.add_done_callback(self._forget(key))

    def _forget(self, key: tuple[str, str]) -> Callable[[asyncio.Task[None]], None]:
        def forget(_task: asyncio.Task[None]) -> None:
            self._active.pop(key, None)

        return forget

    async def process_now(self, blob_path: str) -> None:
        """Invoke for one blob right now, without receipts (the admin "run function" call)."""
        container, _, name = blob_path.strip("/").partition("/")
        argument = await asyncio.to_thread(open_blob, self.service, container, name, None, self._as_type)
        arguments = {self.spec.trigger_arg: argument}
        await self.invoker.invoke(self.spec, arguments, detail=f"{blob_path} (manual)")

    async def _process(self, name: str, etag: str) -> None:
        async with self._slots:
            if self.stopping.is_set():
                return
            try:
                claim = await asyncio.to_thread(
                    self.receipts.claim, self.spec.name, self.path.container, name, etag
                )
            except AzureError as exc:
                self._warn_once(f"receipt for {name} unavailable: {error_text(exc)}")
                return
            if isinstance(claim, Done):
                self._done.add((name, etag))
                return
            if isinstance(claim, Busy):
                return
            try:
                await self._attempt(claim, name, etag)
            except AzureError as exc:  # the attempt stays counted; the next poll retries the blob
                self._warn_once(f"{name}: storage error, will retry: {error_text(exc)}")

    async def _attempt(self, claim: Claim, name: str, etag: str) -> None:
        blob = f"{self.path.container}/{name}"
        if claim.exhausted:
            await asyncio.to_thread(self.receipts.poison, claim, "attempts exhausted before this run")
            self._done.add((name, etag))
            return
        lost = asyncio.Event()
        renewing = asyncio.ensure_future(keep_renewed(claim.lease, lost))
        recorded = False
        try:
            try:
                argument = await asyncio.to_thread(
                    open_blob, self.service, self.path.container, name, etag, self._as_type
                )
            except (ResourceNotFoundError, HttpResponseError) as exc:
                if getattr(exc, "status_code", None) in (404, 412):
                    log.info("%s: %s changed or was deleted before it was processed", self.spec.name, blob)
                    await asyncio.to_thread(self.receipts.complete, claim, "superseded")
                    recorded = True
                    self._done.add((name, etag))
                    return
                raise

            async def finish(outcome: Outcome) -> None:
                nonlocal recorded
                if lost.is_set():
                    raise RuntimeError(f"lease on the receipt for {blob} was lost; result not recorded")
                if outcome.succeeded:
                    await asyncio.to_thread(self.receipts.complete, claim)
                    self._done.add((name, etag))
                else:
                    poisoned = await asyncio.to_thread(self.receipts.failed, claim, outcome.summary)
                    if poisoned:
                        log.error(
                            "%s: %s failed %d times; poison record written",
                            self.spec.name,
                            blob,
                            claim.attempts,
                        )
                        self._done.add((name, etag))
                recorded = True

            detail = f"{blob} (attempt {claim.attempts}/{self.receipts.max_attempts})"
            await self.invoker.invoke(
                self.spec,
                {self.spec.trigger_arg: argument},
                detail=detail,
                retry=(claim.attempts - 1, self.receipts.max_attempts - 1),
                finish=finish,
            )
        finally:
            renewing.cancel()
            if not recorded:  # interrupted (shutdown) or the record failed: the blob will be retried
                self.receipts.abandon(claim)
