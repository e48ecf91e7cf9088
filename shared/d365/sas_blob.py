"""Upload to and download from SAS blob URLs (D365's ``GetAzureWriteUrl``, exported packages, error files).

Every request goes through ``D365Transport.request(..., authenticate=False)``: the D365 bearer token never
goes to a blob host, and the shared retry policy applies to each request. Uploads are chosen by size:

* **Put Blob** (one ``PUT``, ``x-ms-blob-type: BlockBlob``) when the whole payload fits in
  ``max_single_put`` bytes AND under the single-put limit of the SAS ``sv`` version (peers §1: 64 MiB before
  2016-05-31, 256 MiB from then, 5000 MiB from 2019-12-12). D365 SAS URLs have been seen with
  ``sv=2014-02-14`` (peers §1, RIS #113), so the limit is read from every URL.
* **Put Block + Put Block List** otherwise, streaming ``block_size`` chunks (clamped to the version's maximum
  block size). Block ids are deterministic (``block-000000``, ...), so re-running an upload replaces the same
  uncommitted blocks, and every block ``PUT`` carries its bytes, which makes it idempotent: the transport's
  policy retries it after a 5xx or a dropped connection. Up to ``max_concurrency`` blocks are in flight;
  memory stays at about ``block_size * (max_concurrency + 1)``.

Downloads stream into a sink. A connection dropped mid-body is not retried by the transport (the caller
holds the body), so :func:`download_to` resumes with an HTTP ``Range`` request from the byte it reached (and
``If-Match`` on the first answer's ETag); a server that ignores ``Range`` answers 200 with the full body,
whose first bytes are skipped. Retries follow the same ``RetryPolicy`` object as the transport.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import re
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import IO, Protocol, cast
from urllib.parse import parse_qs, urlsplit
from xml.sax.saxutils import escape

import requests

from shared.d365.errors import D365ConnectionError, D365Error, D365TimeoutError
from shared.d365.network_errors import NETWORK_ERRORS, BodyReadError, classify_network_error, safe_cause
from shared.d365.retry import ErrorKind
from shared.d365.transport import D365Transport
from shared.logs import carry_log_context
from shared.redact import redact_text, redact_url

__all__ = [
    "DEFAULT_BLOCK_SIZE",
    "DEFAULT_CHUNK_SIZE",
    "DEFAULT_MAX_SINGLE_PUT",
    "MAX_BLOCKS",
    "BinarySink",
    "MiB",
    "UploadResult",
    "block_id",
    "download_to",
    "max_block_size",
    "sas_version",
    "single_put_limit",
    "upload_blob",
]

logger = logging.getLogger(__name__)

MiB = 1024 * 1024
DEFAULT_BLOCK_SIZE = 4 * MiB  # the largest block every SAS version accepts (sv < 2016-05-31: 4 MiB)
DEFAULT_MAX_SINGLE_PUT = 8 * MiB  # above this, blocks (each retried alone) beat one big PUT; held in memory
DEFAULT_CHUNK_SIZE = 1 * MiB
MAX_BLOCKS = 50_000  # committed blocks per blob (all versions)

_VERSION = re.compile(r"^\d{4}-\d{2}-\d{2}$")
# (first version, single Put Blob limit, Put Block limit): Azure "Previous Azure Storage service versions"
_LIMITS = (
    ("2019-12-12", 5000 * MiB, 4000 * MiB),
    ("2016-05-31", 256 * MiB, 100 * MiB),
    ("", 64 * MiB, 4 * MiB),
)


class BinarySink(Protocol):
    """Where a download goes: anything with ``write(bytes)`` (a file, a blob upload stream, ...)."""

    def write(self, data: bytes, /) -> object: ...


@dataclass(frozen=True)
class UploadResult:
    """What an upload did: ``bytes`` sent, ``blocks`` (0 for a single Put Blob) and the blob's ``etag``."""

    bytes: int
    blocks: int
    etag: str | None


def sas_version(url: str) -> str | None:
    """The ``sv`` parameter of a SAS URL (the storage version every request on it runs with), or None."""
    values = parse_qs(urlsplit(url).query).get("sv")
    if not values or not _VERSION.match(values[0]):
        return None
    return values[0]


def _limits(version: str | None) -> tuple[int, int]:
    for first, single, block in _LIMITS:
        if version is not None and version >= first:
            return single, block
    return _LIMITS[-1][1], _LIMITS[-1][2]  # unknown version: the oldest (smallest) limits


def single_put_limit(version: str | None) -> int:
    """The largest Put Blob the storage version accepts; an unknown version gets the smallest (64 MiB)."""
    return _limits(version)[0]


def max_block_size(version: str | None) -> int:
    """The largest Put Block the storage version accepts (4 MiB, 100 MiB or 4000 MiB)."""
    return _limits(version)[1]


def block_id(index: int) -> str:
    """The deterministic, fixed-length base64 block id of block ``index`` (0-based)."""
    if not 0 <= index < MAX_BLOCKS:
        raise ValueError(f"block index {index} out of range")
    return base64.b64encode(f"block-{index:06d}".encode("ascii")).decode("ascii")


class _ChunkReader:
    """Reads exact-size pieces from a file-like, an iterable of chunks, or bytes.

    Pieces are assembled with one ``join`` from the chunks as they came (a chunk split at a block edge is
    sliced through a memoryview): every byte is copied once, not staged in a growing buffer.
    """

    def __init__(self, source: IO[bytes] | Iterable[bytes] | bytes, limit: int | None = None) -> None:
        self._left = limit  # bytes still allowed (``length`` given by the caller), None = to the end
        self._file: IO[bytes] | None = None
        self._chunks: Iterator[bytes] | None = None
        self._pending: deque[bytes | memoryview] = deque()
        if isinstance(source, bytes | bytearray | memoryview):
            if source:
                self._pending.append(bytes(source))
        elif hasattr(source, "read"):
            self._file = cast("IO[bytes]", source)
        else:
            self._chunks = iter(source)

    def unread(self, data: bytes) -> None:
        """Put ``data`` back in front of what is still to be read."""
        if data:
            self._pending.appendleft(data)
        if self._left is not None:
            self._left += len(data)

    def read(self, size: int) -> bytes:
        """Up to ``size`` bytes; fewer only at the end of the source (or of ``limit``)."""
        if self._left is not None:
            size = min(size, self._left)
        data = self._read(size)
        if self._left is not None:
            self._left -= len(data)
        return data

    def _more(self, size: int) -> bytes | None:
        """The source's next non-empty bytes (up to ``size`` from a file), None at its end."""
        if self._file is not None:
            return self._file.read(size) or None
        while self._chunks is not None:
            more = next(self._chunks, None)
            if more is None:
                self._chunks = None
            elif more:
                return more
        return None

    def _read(self, size: int) -> bytes:
        parts: list[bytes | memoryview] = []
        have = 0
        while have < size:
            if not self._pending:
                more = self._more(size - have)
                if more is None:
                    break
                self._pending.append(more)
            head = self._pending[0]
            need = size - have
            if len(head) <= need:
                parts.append(self._pending.popleft())
                have += len(head)
            else:
                view = head if isinstance(head, memoryview) else memoryview(head)
                parts.append(view[:need])
                self._pending[0] = view[need:]
                have += need
        if len(parts) == 1 and isinstance(parts[0], bytes):
            return parts[0]
        return b"".join(parts)


def _md5(data: bytes) -> str:
    return base64.b64encode(hashlib.md5(data, usedforsecurity=False).digest()).decode("ascii")


def _version_headers(version: str | None) -> dict[str, str]:
    # With a SAS the signed `sv` governs the request (peers §1); sending the same value keeps both in step.
    return {"x-ms-version": version} if version else {}


def upload_blob(
    transport: D365Transport,
    url: str,
    source: IO[bytes] | Iterable[bytes] | bytes,
    *,
    length: int | None = None,
    block_size: int = DEFAULT_BLOCK_SIZE,
    max_single_put: int = DEFAULT_MAX_SINGLE_PUT,
    max_concurrency: int = 2,
    content_type: str = "application/octet-stream",
) -> UploadResult:
    """Upload ``source`` to the SAS ``url`` as a block blob (overwriting it), streaming.

    ``source`` is a binary file-like (read in chunks), an iterable of byte chunks, or bytes. ``length``
    (when known) lets a big payload skip the read-ahead and caps what is read; without it the first
    ``max_single_put + 1`` bytes decide. Raises ``D365Error`` subclasses (from the transport) on failure,
    ``ValueError`` for bad arguments; messages never contain the SAS signature.
    """
    if block_size < 1 or max_single_put < 0 or max_concurrency < 1:
        raise ValueError("block_size and max_concurrency must be >= 1, max_single_put >= 0")
    version = sas_version(url)
    single_limit = min(max_single_put, single_put_limit(version))
    block_limit = max_block_size(version)
    if length is not None and length > block_size * MAX_BLOCKS:
        block_size = -(-length // MAX_BLOCKS)  # grow blocks so the blob fits in 50,000 of them
    if block_size > block_limit:
        raise ValueError(f"blocks of {block_size} bytes exceed the {block_limit} allowed by sv={version}")
    reader = _ChunkReader(source, length)
    head = b""
    if length is None or length <= single_limit:
        head = reader.read(single_limit + 1)
        if len(head) <= single_limit:
            return _put_blob(transport, url, head, version, content_type)
    reader.unread(head)
    return _put_blocks(transport, url, reader, version, block_size, max_concurrency, content_type)


def _put_blob(
    transport: D365Transport, url: str, data: bytes, version: str | None, content_type: str
) -> UploadResult:
    headers = {
        **_version_headers(version),
        "x-ms-blob-type": "BlockBlob",
        "Content-Type": content_type,
        "Content-MD5": _md5(data),
    }
    response = transport.request("PUT", url, data=data, headers=headers, authenticate=False)
    return UploadResult(bytes=len(data), blocks=0, etag=response.headers.get("ETag"))


def _put_blocks(
    transport: D365Transport,
    url: str,
    reader: _ChunkReader,
    version: str | None,
    block_size: int,
    max_concurrency: int,
    content_type: str,
) -> UploadResult:
    def put_block(index: int, data: bytes) -> None:
        headers = {**_version_headers(version), "Content-MD5": _md5(data)}
        params = {"comp": "block", "blockid": block_id(index)}
        transport.request("PUT", url, params=params, data=data, headers=headers, authenticate=False)

    def blocks() -> Iterator[bytes]:
        while piece := reader.read(block_size):
            yield piece

    total = count = 0
    pending: set[Future[None]] = set()
    with ThreadPoolExecutor(max_workers=max_concurrency, thread_name_prefix="sas-block") as pool:
        try:
            for data in blocks():
                if count >= MAX_BLOCKS:
                    raise ValueError(f"more than {MAX_BLOCKS} blocks: pass length= or a larger block_size")
                while len(pending) >= max_concurrency:
                    done, pending = wait(pending, return_when=FIRST_COMPLETED)
                    for future in done:
                        future.result()
                pending.add(pool.submit(carry_log_context(put_block), count, data))  # the caller's log ids
                total += len(data)
                count += 1
            for future in pending:
                future.result()
        finally:
            for future in pending:
                future.cancel()
    ids = "".join(f"<Latest>{escape(block_id(i))}</Latest>" for i in range(count))
    body = f'<?xml version="1.0" encoding="utf-8"?><BlockList>{ids}</BlockList>'.encode()
    headers = {
        **_version_headers(version),
        "Content-Type": "application/xml",
        "x-ms-blob-content-type": content_type,
    }
    response = transport.request(
        "PUT", url, params={"comp": "blocklist"}, data=body, headers=headers, authenticate=False
    )
    logger.info("uploaded %d bytes in %d blocks to %s", total, count, redact_url(url.split("?")[0]))
    return UploadResult(bytes=total, blocks=count, etag=response.headers.get("ETag"))


# ------------------------------------------------------------------------------------------------ download


def _content_range_start(value: str | None) -> int | None:
    match = re.match(r"^\s*bytes\s+(\d+)-", value or "")
    return int(match.group(1)) if match else None


def _body_length(response: requests.Response) -> int | None:
    length = response.headers.get("Content-Length", "")
    return int(length) if length.isdigit() else None


class _Truncated(Exception):
    """The body ended before the length the server announced."""


def download_to(
    transport: D365Transport,
    url: str,
    sink: BinarySink,
    *,
    authenticate: bool = False,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    headers: dict[str, str] | None = None,
    sleep: Callable[[float], None] | None = None,
) -> int:
    """Stream a ``GET url`` into ``sink`` and return the byte count, resuming after mid-body drops.

    ``authenticate=False`` for SAS URLs (the default); the recurring-integrations download passes True
    (same D365 host, bearer token). Opening each request is the transport's business (429, 5xx, connect
    errors); a drop mid-body is retried here per ``transport.policy``, with the failure count and the
    deadline measured since the last byte that arrived, resuming at the byte reached: ``Range`` +
    ``If-Match`` (a changed blob then fails with ``D365ConflictError``); a server that ignores ``Range``
    sends everything again and the bytes already written are skipped. ``sink`` only needs ``write``.
    """
    pause = sleep or time.sleep
    policy = transport.policy
    received = failures = 0
    previous_delay = 0.0
    etag: str | None = None
    since = time.monotonic()
    safe_url = redact_url(url)
    while True:
        request_headers = {"Accept-Encoding": "identity", **(headers or {})}
        if received:
            request_headers["Range"] = f"bytes={received}-"
            if etag:
                request_headers["If-Match"] = etag
        response = transport.request(
            "GET",
            url,
            headers=request_headers,
            stream=True,
            authenticate=authenticate,
            ok_statuses=(416,) if received else (),
        )
        try:
            if response.status_code == 416:  # nothing after `received`: the drop came after the last byte
                return received
            etag = etag or response.headers.get("ETag")
            skip = 0
            if received and (
                response.status_code != 206
                or _content_range_start(response.headers.get("Content-Range")) != received
            ):
                skip = received  # Range ignored: the whole body again
            expected = _body_length(response)
            body = 0  # bytes of this answer's body read so far, skipped ones included
            try:
                for chunk in response.iter_content(chunk_size):
                    body += len(chunk)
                    if skip:
                        cut = min(skip, len(chunk))
                        skip -= cut
                        chunk = chunk[cut:]
                        if not chunk:
                            continue
                    sink.write(chunk)
                    received += len(chunk)
                    failures, since = 0, time.monotonic()
                if expected is not None and body < expected:
                    raise _Truncated(f"body ended at {body} of {expected} bytes")
                return received
            except (*NETWORK_ERRORS, _Truncated) as exc:
                failures += 1
                kind = (
                    ErrorKind.TRUNCATED
                    if isinstance(exc, _Truncated)
                    else classify_network_error(BodyReadError(exc))
                )
                decision = policy.decide(
                    attempts=failures,
                    error=kind,
                    idempotent=True,
                    elapsed=time.monotonic() - since,
                    previous_delay=previous_delay,
                )
                if not decision.retry:
                    error_cls: type[D365Error] = (
                        D365TimeoutError if decision.reason == "deadline" else D365ConnectionError
                    )
                    raise error_cls(
                        f"GET download broke after {received} bytes ({kind.value}: {redact_text(str(exc))}); "
                        f"stopped: {decision.reason}",
                        url=safe_url,
                    ) from safe_cause(exc)
                logger.warning(
                    "download of %s broke after %d bytes (%s): resuming in %.2fs",
                    safe_url,
                    received,
                    kind.value,
                    decision.delay,
                )
                transport.stats.count("retries", "download_resume")
                previous_delay = decision.delay
                if decision.delay > 0:
                    pause(decision.delay)
        finally:
            response.close()
