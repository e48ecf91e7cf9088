"""A dropped file as a binary stream for the record readers: read in ranged GETs (never whole in memory),
each guarded by the drop's ETag, and hashed as it is read (the ledger keys on the content's SHA-256)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

from azure.core import MatchConditions

from shared.context import AppContext
from shared.pipelines.imports.ledger import InputRef

__all__ = ["RANGE_BYTES", "HashedBlob"]

RANGE_BYTES = 4 * 1024 * 1024  # one ranged GET of the input


class HashedBlob:
    """The input blob as a binary stream: ranged GETs of ``RANGE_BYTES`` (guarded by the drop's ETag),
    hashed as they are read; ``sha256()`` reads what the parser left and returns the content's hash."""

    def __init__(self, context: AppContext, drop: InputRef) -> None:
        self._ranges = self._download(context, drop)
        self._hash = hashlib.sha256()
        self._chunk = b""
        self._at = 0  # read position in ``_chunk`` (no re-slicing of a 4 MB range per small read)

    @staticmethod
    def _download(context: AppContext, drop: InputRef) -> Iterator[bytes]:
        blob = context.store.blob(drop.container, drop.name)
        for offset in range(0, drop.size, RANGE_BYTES):
            yield blob.download_blob(
                offset=offset,
                length=min(RANGE_BYTES, drop.size - offset),
                etag=drop.etag,
                match_condition=MatchConditions.IfNotModified,
            ).readall()

    def read(self, size: int = -1) -> bytes:
        """Up to ``size`` bytes (fewer at a range's end; ``b""`` at the end of the blob); -1: the rest."""
        if size < 0:
            rest = [self._chunk[self._at :]]
            for chunk in self._ranges:
                self._hash.update(chunk)
                rest.append(chunk)
            self._chunk, self._at = b"", 0
            return b"".join(rest)
        while self._at >= len(self._chunk):
            following = next(self._ranges, None)
            if following is None:
                return b""
            self._hash.update(following)
            self._chunk, self._at = following, 0
        out = self._chunk[self._at : self._at + size]
        self._at += len(out)
        return out

    def sha256(self) -> str:
        for chunk in self._ranges:
            self._hash.update(chunk)
        return self._hash.hexdigest()
