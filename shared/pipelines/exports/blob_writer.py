"""A file-like sink that streams into a block blob and appears under its name only when committed.

Blocks are staged under ids unique to this attempt and become the blob in one ``Put Block List`` carrying
``If-None-Match: *``. Until that commit nothing is visible (measured on Azurite 3.35 and documented for
Azure: uncommitted blocks are not a blob), so a download that breaks half-way leaves no partial file, a
retried attempt never mixes its blocks with an earlier one's, and of two writers of the same name exactly
one wins (the other learns ``ResourceExistsError`` → :meth:`commit` returns False). A body smaller than one
block is written with a single conditional ``Put Blob`` instead.

Memory stays at about ``block_size * (max_in_flight + 1)``: staging runs on a small thread pool while the
caller keeps writing (download and upload overlap), and ``write`` waits when ``max_in_flight`` blocks are
pending. The SHA-256 and length of everything written are computed on the way.
"""

from __future__ import annotations

import base64
import hashlib
import uuid
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from azure.core.exceptions import ResourceExistsError
from azure.storage.blob import BlobBlock, BlobClient, ContentSettings

__all__ = ["DEFAULT_BLOCK_SIZE", "BlockBlobWriter"]

DEFAULT_BLOCK_SIZE = 4 * 1024 * 1024


class BlockBlobWriter:
    """``write`` bytes, then :meth:`commit` (once-only by default) or :meth:`abort`."""

    def __init__(
        self,
        blob: BlobClient,
        *,
        block_size: int = DEFAULT_BLOCK_SIZE,
        max_in_flight: int = 2,
        content_type: str = "application/octet-stream",
    ) -> None:
        if block_size < 1 or max_in_flight < 1:
            raise ValueError("block_size and max_in_flight must be positive")
        self.blob = blob
        self.block_size = block_size
        self.max_in_flight = max_in_flight
        self.content_settings = ContentSettings(content_type=content_type)
        self._attempt = uuid.uuid4().hex  # all ids of one blob must have the same length: 32 + 1 + 6
        self._parts: list[bytes] = []
        self._buffered = 0
        self._blocks: list[str] = []
        self._pending: deque[Future[Any]] = deque()
        self._pool: ThreadPoolExecutor | None = None
        self._hash = hashlib.sha256()
        self._closed = False
        self.size = 0

    @property
    def sha256(self) -> str:
        return self._hash.hexdigest()

    def writable(self) -> bool:
        return True

    def write(self, data: bytes | bytearray | memoryview) -> int:
        if self._closed:
            raise ValueError("write to a committed or aborted BlockBlobWriter")
        chunk = bytes(data)  # the caller may reuse its buffer; bytes input is not copied
        self._hash.update(chunk)
        self.size += len(chunk)
        self._parts.append(chunk)
        self._buffered += len(chunk)
        if self._buffered >= self.block_size:
            joined = b"".join(self._parts)  # one copy per block; the parts are dropped right after
            self._parts.clear()
            cut = len(joined) - len(joined) % self.block_size
            for start in range(0, cut, self.block_size):
                self._stage(joined[start : start + self.block_size])
            rest = joined[cut:]
            del joined
            self._parts = [rest] if rest else []
            self._buffered = len(rest)
        return len(chunk)

    def flush(self) -> None:
        """Nothing to flush: data becomes visible only at :meth:`commit`."""

    def _block_id(self, index: int) -> str:
        return base64.b64encode(f"{self._attempt}-{index:06d}".encode()).decode()

    def _stage(self, chunk: bytes) -> None:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.max_in_flight, thread_name_prefix="blob-writer")
        while len(self._pending) >= self.max_in_flight:
            self._pending.popleft().result()  # waits; re-raises a failed upload
        block_id = self._block_id(len(self._blocks))
        self._blocks.append(block_id)
        self._pending.append(self._pool.submit(self.blob.stage_block, block_id, chunk, length=len(chunk)))

    def _drain(self) -> None:
        while self._pending:
            self._pending.popleft().result()

    def commit(self, *, if_absent: bool = True, metadata: dict[str, str] | None = None) -> bool:
        """Make the written bytes the blob; with ``if_absent`` only if no blob has the name (else False)."""
        if self._closed:
            raise ValueError("BlockBlobWriter already committed or aborted")
        try:
            rest = b"".join(self._parts)
            self._parts.clear()
            if not self._blocks:
                self.blob.upload_blob(
                    rest,
                    overwrite=not if_absent,
                    metadata=metadata,
                    content_settings=self.content_settings,
                )
            else:
                if rest:
                    self._stage(rest)
                del rest
                self._drain()
                conditions: dict[str, Any] = {"if_none_match": "*"} if if_absent else {}
                self.blob.commit_block_list(
                    [BlobBlock(block_id) for block_id in self._blocks],
                    content_settings=self.content_settings,
                    metadata=metadata,
                    **conditions,
                )
        except ResourceExistsError:
            return False
        finally:
            self._close()
        return True

    def abort(self) -> None:
        """Give up: staged blocks stay uncommitted (invisible; the service discards them)."""
        if self._closed:
            return
        for future in self._pending:
            future.cancel()
        for future in self._pending:
            if not future.cancelled():
                future.exception()  # wait, but a failed block does not matter any more
        self._pending.clear()
        self._close()

    def _close(self) -> None:
        self._closed = True
        self._parts.clear()
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def __enter__(self) -> BlockBlobWriter:
        return self

    def __exit__(self, exc_type: object, *rest: object) -> None:
        if not self._closed:
            self.abort()
