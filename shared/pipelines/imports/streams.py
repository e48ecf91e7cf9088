"""Streams of the intake: the input read once (ranged, pinned, hashed), and a package built on one thread
while it is uploaded from another.

- :func:`blob_chunks` / :class:`HashingReader`: the blob's bytes as a forward-only file, pinned to the
  version that triggered (ETag), SHA-256 computed on a thread of its own, size-capped.
- :func:`spool`: the input into a local temporary file (zips need seeking; what is enqueued must be
  re-readable for a retry).
- :class:`PackagePipe` / :func:`stream_to_upload`: ``build_package`` writing while the block upload to
  D365's SAS URL reads; memory stays at a few MiB whatever the file size, and nothing is committed when the
  build fails (the block list is only put at the end).
"""

from __future__ import annotations

import hashlib
import queue
import tempfile
import threading
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import suppress
from dataclasses import dataclass
from itertools import islice
from typing import IO, Any, TypeVar, cast

from azure.core import MatchConditions
from azure.storage.blob import BlobClient

from shared.d365.sas_blob import DEFAULT_BLOCK_SIZE
from shared.packages.build import BuiltPackage
from shared.packages.errors import PackageRejected, RejectReason

__all__ = ["CHUNK", "HashingReader", "PackagePipe", "Spooled", "blob_chunks", "spool", "stream_to_upload"]

CHUNK = 1024 * 1024
RANGE = 4 * CHUNK  # one ranged GET; memory ~ RANGE x (ahead + 1): 8 MiB ranges measured 25 MiB more RSS
IDLE_HASH_SECONDS = 600.0
T = TypeVar("T")


def blob_chunks(
    blob: BlobClient, etag: str, size: int, *, chunk: int = RANGE, ahead: int = 2
) -> Iterator[bytes]:
    """The blob's bytes in ``chunk``-sized ranged reads, ``ahead`` of them in flight, all pinned to the
    version with ``etag`` (a replaced blob fails the read instead of mixing versions).

    One GET per range keeps memory at ``chunk * (ahead + 1)`` whatever the size (the SDK's own downloader
    starts with one 32 MiB read); the SDK retries each GET on its own.
    """

    def read(offset: int) -> bytes:
        downloader = blob.download_blob(
            offset=offset,
            length=min(chunk, size - offset),
            etag=etag,
            match_condition=MatchConditions.IfNotModified,
        )
        # chunks() hands over the response body as read; readall() copies it once more (1 GiB = ~0.5 s CPU)
        parts = list(downloader.chunks())
        return parts[0] if len(parts) == 1 else b"".join(parts)

    offsets = iter(range(0, size, chunk))
    with ThreadPoolExecutor(max_workers=ahead, thread_name_prefix="import-read") as pool:
        pending: deque[Future[bytes]] = deque()
        for offset in islice(offsets, ahead):
            pending.append(pool.submit(read, offset))
        try:
            while pending:
                data = pending.popleft().result()
                following = next(offsets, None)
                if following is not None:
                    pending.append(pool.submit(read, following))
                yield data
        finally:
            for future in pending:
                future.cancel()


class _BackgroundHash:
    """SHA-256 on its own thread: ``hashlib`` releases the GIL on big buffers, so hashing runs beside the
    packaging instead of in front of it (it is a sixth of the CPU a big CSV costs)."""

    def __init__(self) -> None:
        self._digest = hashlib.sha256()
        self._queue: queue.Queue[bytes | None] = queue.Queue(maxsize=4)
        self._thread = threading.Thread(target=self._run, name="import-sha256", daemon=True)
        self._thread.start()
        self._hex: str | None = None

    def _run(self) -> None:
        # A reader abandoned mid-way (a rejected or failed input) never sends the end: give up after a while.
        with suppress(queue.Empty):
            while (data := self._queue.get(timeout=IDLE_HASH_SECONDS)) is not None:
                self._digest.update(data)

    def update(self, data: bytes) -> None:
        if data:
            self._queue.put(data)

    def hexdigest(self) -> str:
        if self._hex is None:
            self._queue.put(None)
            self._thread.join()
            self._hex = self._digest.hexdigest()
        return self._hex

    def stop(self) -> None:
        """End the thread now (the reader was abandoned); the digest of a partial read is never used."""
        if self._hex is None and self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()


class HashingReader:
    """A read-only, forward-only file over byte chunks; sha256 and size of everything read so far."""

    def __init__(self, chunks: Iterator[bytes], *, name: str, limit: int | None = None) -> None:
        self._chunks = chunks
        self._current = b""
        self._position = 0
        self._digest = _BackgroundHash()
        self.name = name
        self.limit = limit
        self.size = 0

    def _take(self, data: bytes) -> bytes:
        self._digest.update(data)
        self.size += len(data)
        if self.limit is not None and self.size > self.limit:
            raise PackageRejected(
                RejectReason.FILE_TOO_LARGE,
                f"{self.name!r} is larger than the limit of {self.limit} bytes",
                entry=self.name,
            )
        return data

    def read(self, size: int = -1) -> bytes:
        """Up to ``size`` bytes (all that is left when negative); only what is returned gets copied."""
        wanted = size if size is not None and size >= 0 else None
        parts: list[bytes] = []
        got = 0
        while wanted is None or got < wanted:
            if self._position >= len(self._current):
                following = next(self._chunks, None)
                if following is None:
                    break
                self._current, self._position = following, 0
            end = len(self._current) if wanted is None else self._position + (wanted - got)
            piece = self._current[self._position : end]
            self._position += len(piece)
            got += len(piece)
            parts.append(piece)
        return self._take(parts[0] if len(parts) == 1 else b"".join(parts))

    def seekable(self) -> bool:
        return False

    def drain(self) -> None:
        """Read (and hash) whatever the consumer left unread."""
        while self.read(CHUNK):
            pass

    @property
    def sha256(self) -> str:
        """The digest of everything read; call once the input is read to its end (it ends the hashing)."""
        return self._digest.hexdigest()

    def close(self) -> None:
        """Stop hashing and reading ahead (a rejected or deferred input is abandoned mid-way): the hash
        thread and the queued chunks must not linger for ``IDLE_HASH_SECONDS``."""
        self._digest.stop()
        closing = getattr(self._chunks, "close", None)
        if closing is not None:
            closing()  # a generator's ``finally`` cancels the ranged reads still pending


@dataclass
class Spooled:
    file: IO[bytes]  # positioned at 0
    sha256: str
    size: int


def spool(reader: HashingReader) -> Spooled:
    """Copy the whole input into a temporary file (deleted when closed); the caller closes ``file``."""
    file = tempfile.TemporaryFile(prefix="import-")  # noqa: SIM115 - handed to the caller
    try:
        while chunk := reader.read(4 * CHUNK):
            file.write(chunk)
        file.seek(0)
    except BaseException:
        file.close()
        raise
    return Spooled(file, reader.sha256, reader.size)


class _End:
    pass


class _Cancelled(Exception):
    pass


class PackagePipe:
    """A bounded, thread-safe byte pipe: ``write`` on the producer side, iteration on the consumer side.

    Writes are cut into ``chunk``-sized items with one ``join`` each (a write split at an edge is sliced
    through a memoryview), so every byte is copied once here. :func:`stream_to_upload` uses the upload's
    block size, which the block upload then sends as they are, without copying again.
    """

    def __init__(self, chunk: int = CHUNK, depth: int = 8) -> None:
        self._queue: queue.Queue[bytes | BaseException | _End] = queue.Queue(maxsize=depth)
        self._chunk = chunk
        self._parts: list[bytes | memoryview] = []
        self._size = 0
        self._cancelled = threading.Event()

    def _put(self, item: bytes | BaseException | _End) -> None:
        while True:
            if self._cancelled.is_set():
                raise _Cancelled("the consumer stopped reading")
            try:
                self._queue.put(item, timeout=0.2)
                return
            except queue.Full:
                continue

    def write(self, data: bytes) -> int:
        size = len(data)
        if size:
            self._parts.append(data)
            self._size += size
            while self._size >= self._chunk:
                self._send(self._chunk)
        return size

    def _send(self, size: int) -> None:
        """Put the first ``size`` bytes of the gathered writes as one item."""
        taken: list[bytes | memoryview] = []
        have = 0
        while have < size:
            head = self._parts[0]
            if have + len(head) <= size:
                taken.append(self._parts.pop(0))
                have += len(head)
            else:
                view = head if isinstance(head, memoryview) else memoryview(head)
                taken.append(view[: size - have])
                self._parts[0] = view[size - have :]
                have = size
        self._size -= size
        self._put(taken[0] if len(taken) == 1 and isinstance(taken[0], bytes) else b"".join(taken))

    def flush(self) -> None:
        return None

    def close(self) -> None:
        if self._size:
            self._send(self._size)
        self._put(_End())

    def fail(self, error: BaseException) -> None:
        if not self._cancelled.is_set():
            self._put(error)

    def cancel(self) -> None:
        self._cancelled.set()

    def __iter__(self) -> Iterator[bytes]:
        while True:
            item = self._queue.get()
            if isinstance(item, _End):
                return
            if isinstance(item, BaseException):
                raise item
            yield item


def stream_to_upload(
    build: Callable[[IO[bytes]], BuiltPackage], upload: Callable[[Iterator[bytes]], T]
) -> tuple[BuiltPackage, T]:
    """Run ``build(sink)`` on a worker thread while ``upload(chunks)`` consumes its output here.

    A build failure (``PackageRejected``...) surfaces in the upload's iterator, so the upload stops before it
    commits anything, and is raised here; an upload failure stops the build.
    """
    pipe = PackagePipe(chunk=DEFAULT_BLOCK_SIZE, depth=2)  # memory ~ block size x (depth + 1)
    outcome: dict[str, Any] = {}

    def produce() -> None:
        try:
            outcome["built"] = build(cast("IO[bytes]", pipe))  # the builder only writes and flushes
            pipe.close()
        except _Cancelled:
            pass
        except BaseException as exc:  # handed to the consumer, raised there
            outcome["error"] = exc
            with suppress(_Cancelled):
                pipe.fail(exc)

    worker = threading.Thread(target=produce, name="import-package-build", daemon=True)
    worker.start()
    try:
        result = upload(iter(pipe))
    except BaseException:
        pipe.cancel()
        worker.join(timeout=30)
        if "error" in outcome:
            raise outcome["error"] from None
        raise
    worker.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["built"], result
