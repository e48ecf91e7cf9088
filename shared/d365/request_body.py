"""A request body prepared for the transport, and whether a retry may send it again."""

from __future__ import annotations

import json as jsonlib
from collections.abc import Iterable
from typing import IO, Any

__all__ = ["PreparedBody", "RequestBody"]

RequestBody = bytes | Iterable[bytes] | IO[bytes]


class PreparedBody:
    """The request body and whether it can be sent again: bytes replay, files rewind, iterators cannot."""

    def __init__(self, data: RequestBody | None, json: Any) -> None:
        self.content_type: str | None = None
        self.payload: RequestBody | None = data
        self.replayable = True
        self._position: int | None = None
        if json is not None:
            if data is not None:
                raise ValueError("give json or data, not both")
            self.payload = jsonlib.dumps(json, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
            self.content_type = "application/json; charset=utf-8"
        elif isinstance(data, bytes | bytearray | memoryview):
            self.payload = bytes(data)
        elif data is not None and hasattr(data, "read"):
            self._position = _start_position(data)
            self.replayable = self._position is not None
        elif data is not None:
            self.replayable = False  # a generator is consumed by the first send

    def rewind(self) -> None:
        if self._position is not None:
            self.payload.seek(self._position)  # type: ignore[union-attr]


def _start_position(stream: Any) -> int | None:
    """Where a file-like body starts, or None when it cannot be rewound for a retry."""
    try:
        if hasattr(stream, "seekable") and not stream.seekable():
            return None
        return int(stream.tell())
    except (AttributeError, OSError, ValueError):
        return None
