"""A byte progress bar on stderr for uploads: ``name  42% |█████      | 12.0/28.6 MiB  8.1 MiB/s  ETA 2s``.

Drawn only when the stream is a terminal (a log file or a pipe gets no ``\\r`` noise) and not disabled
with ``--no-progress``; redrawn at most every ``interval`` seconds, so a 1 GB upload costs a few hundred
writes. Thread-safe: the storage SDK and a streaming HTTP body may report from worker threads.
:class:`ProgressReader` is a file-like wrapper that reports every ``read`` (a streaming request body that
never holds the file in memory) and follows ``seek`` so a retried request starts its count again.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from typing import IO, TextIO

__all__ = ["Progress", "ProgressReader", "format_bytes"]

_UNITS = ("B", "KiB", "MiB", "GiB", "TiB")


def format_bytes(count: float) -> str:
    """``1536`` → ``1.5 KiB``; whole bytes below 1 KiB."""
    value, unit = float(count), 0
    while value >= 1024 and unit < len(_UNITS) - 1:
        value, unit = value / 1024, unit + 1
    return f"{int(value)} B" if unit == 0 else f"{value:.1f} {_UNITS[unit]}"


class Progress:
    """``update(done)`` with the bytes done so far; ``close()`` draws the final state and ends the line."""

    def __init__(
        self,
        label: str,
        total: int,
        stream: TextIO,
        *,
        enabled: bool | None = None,
        interval: float = 0.1,
        width: int = 24,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.label, self.total, self.stream = label, max(0, total), stream
        self.enabled = _is_terminal(stream) if enabled is None else enabled
        self.interval, self.width, self.clock = interval, width, clock
        self.started = clock()
        self.done = 0
        self._drawn_at: float | None = None
        self._closed = False
        self._lock = threading.Lock()

    def update(self, done: int) -> None:
        with self._lock:
            self.done = done
            now = self.clock()
            if self.enabled and (self._drawn_at is None or now - self._drawn_at >= self.interval):
                self._draw(now)

    def advance(self, count: int) -> None:
        self.update(self.done + count)

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self.enabled:
                self._draw(self.clock())
                self.stream.write("\n")
                self.stream.flush()

    def line(self, now: float | None = None) -> str:
        """The bar as text (without ``\\r``)."""
        elapsed = max((self.clock() if now is None else now) - self.started, 1e-6)
        rate = self.done / elapsed
        fraction = min(1.0, self.done / self.total) if self.total else 1.0
        filled = int(fraction * self.width)
        bar = "█" * filled + " " * (self.width - filled)
        left = (self.total - self.done) / rate if rate > 0 and self.total > self.done else 0.0
        return (
            f"{self.label}  {fraction * 100:3.0f}% |{bar}| {format_bytes(self.done)}/"
            f"{format_bytes(self.total)}  {format_bytes(rate)}/s  ETA {left:.0f}s"
        )

    def _draw(self, now: float) -> None:
        self._drawn_at = now
        self.stream.write("\r" + self.line(now))
        self.stream.flush()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty() and os.environ.get("TERM") != "dumb"
    except (AttributeError, ValueError):
        return False


class ProgressReader:
    """A binary file wrapper whose reads report the position to ``progress``; seekable when the file is."""

    def __init__(self, file: IO[bytes], progress: Progress) -> None:
        self._file, self._progress = file, progress

    def read(self, size: int = -1) -> bytes:
        data = self._file.read(size)
        self._progress.update(self._file.tell())
        return data

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        return self._file.seek(offset, whence)

    def tell(self) -> int:
        return self._file.tell()

    def seekable(self) -> bool:
        return self._file.seekable()

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        self._file.close()
