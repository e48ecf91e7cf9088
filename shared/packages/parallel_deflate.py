"""Deflate one stream on several threads (pigz-style), output in order, memory bounded.

The input is cut into ``chunk_size`` pieces; each is compressed on a thread pool by its own raw-deflate
compressor (zlib and ISA-L release the GIL, so the threads really run in parallel) primed with the previous
piece's last 32 KiB as dictionary (so matches may reach back across the cut: the ratio stays that of one
stream). Every piece but the last ends with ``Z_SYNC_FLUSH`` (byte-aligned, no final-block bit), the last
with ``Z_FINISH``: concatenated they are one valid deflate stream. The CRC-32 and the size are computed in
order on the caller's thread. At most ``depth`` pieces are in flight; finished ones are written in order.

Engine (:func:`deflate_engine`): levels 1-3 use Intel ISA-L (``isal.isal_zlib``, python-isal) when it is
installed — standard raw DEFLATE that any inflater reads (``zipfile``, .NET ``ZipArchive``), about 4x the
speed of zlib level 1 on CSV text and UTF-16 at a slightly *better* ratio (docs/benchmarks.md,
``imports_1gb``). ISA-L's levels 1-3 are its own fast range, not zlib's: level 0 (stored, no compression)
and 4-9 (a deliberate choice of ratio over speed; ISA-L's best is well behind zlib 6 on UTF-16) stay on the
stdlib ``zlib``. So does everything when ``isal`` cannot be imported (a platform without a wheel): the
packages are the same format, only slower to build.
"""

from __future__ import annotations

import os
import zlib
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

__all__ = [
    "DEFAULT_DEFLATE_CHUNK",
    "FAST_LEVELS",
    "ISAL",
    "ZLIB",
    "DeflateEngine",
    "ParallelDeflater",
    "default_workers",
    "deflate_engine",
    "fast_deflate_available",
]

DEFAULT_DEFLATE_CHUNK = 2 * 1024 * 1024
FAST_LEVELS = range(1, 4)  # the levels ISA-L serves (its 1-3); the others always use zlib
_WINDOW = 32 * 1024  # deflate's window: the dictionary a piece needs from the one before


class _Compressor(Protocol):
    def compress(self, data: bytes, /) -> bytes: ...
    def flush(self, mode: int = ..., /) -> bytes: ...


@dataclass(frozen=True)
class DeflateEngine:
    """A raw-deflate implementation: ``name`` (``isal`` or ``zlib``), its compressor factory and CRC-32."""

    name: str
    _compressobj: Callable[..., _Compressor]
    crc32: Callable[[bytes, int], int]
    sync_flush: int
    finish: int

    def deflate(self, data: bytes, dictionary: bytes, level: int, last: bool) -> bytes:
        """``data`` as the next piece of a raw deflate stream (``last`` ends the stream)."""
        if dictionary:
            compressor = self._compressobj(level, zlib.DEFLATED, -15, zdict=dictionary)
        else:
            compressor = self._compressobj(level, zlib.DEFLATED, -15)
        return compressor.compress(data) + compressor.flush(self.finish if last else self.sync_flush)


ZLIB = DeflateEngine("zlib", zlib.compressobj, zlib.crc32, zlib.Z_SYNC_FLUSH, zlib.Z_FINISH)


def _isal_engine() -> DeflateEngine | None:
    try:
        from isal import isal_zlib
    except ImportError:  # optional speed-up (requirements.txt): without it the stdlib zlib does the same job
        return None
    return DeflateEngine(
        "isal", isal_zlib.compressobj, isal_zlib.crc32, isal_zlib.Z_SYNC_FLUSH, isal_zlib.Z_FINISH
    )


ISAL = _isal_engine()


def fast_deflate_available() -> bool:
    """Whether ISA-L (``isal``) is importable here."""
    return ISAL is not None


def deflate_engine(level: int, *, fast: bool = True) -> DeflateEngine:
    """The engine for ``level``: ISA-L for 1-3 when installed and ``fast``, else the stdlib zlib."""
    if fast and ISAL is not None and level in FAST_LEVELS:
        return ISAL
    return ZLIB


def default_workers() -> int:
    """Threads for deflating: the machine's cores, at most 4 (more buys little, costs memory)."""
    return max(1, min(4, os.cpu_count() or 1))


class ParallelDeflater:
    """``write`` uncompressed bytes, ``finish`` once; compressed bytes go to ``output`` in order.

    ``pool`` is shared and not shut down here (None: compress on the calling thread); ``depth`` pieces in
    flight (the pool's workers + 1 keeps them all busy while the caller prepares the next piece); ``engine``
    defaults to :func:`deflate_engine` of ``level``. After ``finish``: ``crc``, ``size`` (uncompressed) and
    ``compressed_size``.
    """

    def __init__(
        self,
        output: Callable[[bytes], object],
        level: int,
        pool: ThreadPoolExecutor | None,
        *,
        chunk_size: int = DEFAULT_DEFLATE_CHUNK,
        depth: int = 3,
        engine: DeflateEngine | None = None,
    ) -> None:
        self._output = output
        self._level = level
        self._pool = pool
        self.engine = engine or deflate_engine(level)
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
        self.crc = self.engine.crc32(data, self.crc)
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
            self._write(self.engine.deflate(piece, dictionary, self._level, last))
            return
        while len(self._in_flight) >= self._depth:
            self._emit(self._in_flight.popleft())
        self._in_flight.append(self._pool.submit(self.engine.deflate, piece, dictionary, self._level, last))

    def _emit(self, future: Future[bytes]) -> None:
        self._write(future.result())

    def _write(self, compressed: bytes) -> None:
        if compressed:
            self._output(compressed)
            self.compressed_size += len(compressed)
