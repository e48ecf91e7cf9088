"""Deflate one stream on several threads (pigz-style), output in order, memory bounded.

The input is cut into ``chunk_size`` pieces; each is compressed on a thread pool by its own raw-deflate
compressor (zlib releases the GIL, so the threads really run in parallel) primed with the previous piece's
last 32 KiB as dictionary (so matches may reach back across the cut: the ratio stays that of one stream).
Every piece but the last ends with ``Z_SYNC_FLUSH`` (byte-aligned, no final-block bit), the last with
``Z_FINISH``: concatenated they are one valid deflate stream. The CRC-32 and the size are computed in order
on the caller's thread. At most ``depth`` pieces are in flight; finished ones are written in order.
"""

from __future__ import annotations

import os
import zlib
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

__all__ = ["DEFAULT_DEFLATE_CHUNK", "ParallelDeflater", "default_workers"]

DEFAULT_DEFLATE_CHUNK = 2 * 1024 * 1024
_WINDOW = 32 * 1024  # deflate's window: the dictionary a piece needs from the one before


def default_workers() -> int:
    """Threads for deflating: the machine's cores, at most 4 (more buys little, costs memory)."""
    return max(1, min(4, os.cpu_count() or 1))


def _deflate(data: bytes, dictionary: bytes, level: int, last: bool) -> bytes:
    if dictionary:
        compressor = zlib.compressobj(level, zlib.DEFLATED, -15, zdict=dictionary)
    else:
        compressor = zlib.compressobj(level, zlib.DEFLATED, -15)
    return compressor.compress(data) + compressor.flush(zlib.Z_FINISH if last else zlib.Z_SYNC_FLUSH)


class ParallelDeflater:
    """``write`` uncompressed bytes, ``finish`` once; compressed bytes go to ``output`` in order.

    ``pool`` is shared and not shut down here (None: compress on the calling thread); ``depth`` pieces in
    flight (the pool's workers + 1 keeps them all busy while the caller prepares the next piece). After
    ``finish``: ``crc``, ``size`` (uncompressed) and ``compressed_size``.
    """

    def __init__(
        self,
        output: Callable[[bytes], object],
        level: int,
        pool: ThreadPoolExecutor | None,
        *,
        chunk_size: int = DEFAULT_DEFLATE_CHUNK,
        depth: int = 3,
    ) -> None:
        self._output = output
        self._level = level
        self._pool = pool
        self._chunk_size = max(1, chunk_size)
        self._depth = max(1, depth)
        self._pending: list[bytes] = []
        self._pending_size = 0
        self._dictionary = b""
        self._in_flight: deque[Future[bytes]] = deque()
        self.crc = 0
        self.size = 0
        self.compressed_size = 0
        self._finished = False

    def write(self, data: bytes) -> None:
        if self._finished:
            raise ValueError("write after finish")
        if not data:
            return
        self.crc = zlib.crc32(data, self.crc)
        self.size += len(data)
        self._pending.append(data)
        self._pending_size += len(data)
        if self._pending_size >= self._chunk_size:
            piece = self._pending[0] if len(self._pending) == 1 else b"".join(self._pending)
            self._pending, self._pending_size = [], 0
            self._submit(piece, last=False)

    def finish(self) -> None:
        """Compress what is left (ending the stream) and write every piece still in flight."""
        if self._finished:
            return
        self._finished = True
        piece = b"".join(self._pending)
        self._pending, self._pending_size = [], 0
        self._submit(piece, last=True)
        while self._in_flight:
            self._emit(self._in_flight.popleft())

    def abandon(self) -> None:
        """Drop what is in flight (the build failed): cancel or wait, write nothing more."""
        self._finished = True
        while self._in_flight:
            future = self._in_flight.popleft()
            if not future.cancel():
                future.exception()

    def _submit(self, piece: bytes, *, last: bool) -> None:
        dictionary = self._dictionary
        self._dictionary = piece[-_WINDOW:] if len(piece) >= _WINDOW else (dictionary + piece)[-_WINDOW:]
        if self._pool is None:
            self._write(_deflate(piece, dictionary, self._level, last))
            return
        while len(self._in_flight) >= self._depth:
            self._emit(self._in_flight.popleft())
        self._in_flight.append(self._pool.submit(_deflate, piece, dictionary, self._level, last))

    def _emit(self, future: Future[bytes]) -> None:
        self._write(future.result())

    def _write(self, compressed: bytes) -> None:
        if compressed:
            self._output(compressed)
            self.compressed_size += len(compressed)
