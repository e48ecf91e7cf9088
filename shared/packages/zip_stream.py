"""A zip written front to back into a sink that cannot seek, from already-deflated entry data.

``zipfile`` compresses on the writing thread only; the package builder deflates on several threads
(:mod:`shared.packages.parallel_deflate`), so it writes the container itself — the same layout ``zipfile``
writes to an unseekable sink, which D365 (.NET ``ZipArchive``) and ``zipfile`` read: per entry a local
header with the data-descriptor flag (bit 3) and zero CRC/sizes, the deflated bytes (method 8), a data
descriptor; then the central directory and its end record. Zip64 (APPNOTE 4.3.9, 4.5.3): an entry that may
pass 4 GiB is declared Zip64 up front (local header sizes 0xFFFFFFFF + a Zip64 extra field, 8-byte sizes in
its descriptor); the central directory gets Zip64 fields, and the archive a Zip64 end record, only for
values that need them.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["ZIP64_LIMIT", "ZipStreamWriter"]

ZIP64_LIMIT = (1 << 31) - 1  # like zipfile: beyond this a size/offset goes to a Zip64 field
_MAX_32 = 0xFFFFFFFF
_DEFLATED = 8
_DATA_DESCRIPTOR = 0x08
_UTF8_NAME = 0x800
_VERSION = 20  # 2.0: deflate
_VERSION_ZIP64 = 45
_EXTERNAL_ATTR = 0o600 << 16  # rw------- (what zipfile puts on written entries)
_LOCAL = struct.Struct("<4sHHHHHLLLHH")
_CENTRAL = struct.Struct("<4sBBBBHHHHLLLHHHHHLL")
_END = struct.Struct("<4sHHHHLLH")
_END64 = struct.Struct("<4sQHHLLQQQQ")
_LOCATOR64 = struct.Struct("<4sLQL")


@dataclass
class _Entry:
    name: bytes
    flags: int
    dos_time: int
    dos_date: int
    offset: int
    zip64: bool
    crc: int = 0
    compressed_size: int = 0
    size: int = 0


def _dos_stamp(date_time: tuple[int, int, int, int, int, int]) -> tuple[int, int]:
    year, month, day, hour, minute, second = date_time
    return hour << 11 | minute << 5 | second // 2, max(0, year - 1980) << 9 | month << 5 | day


class ZipStreamWriter:
    """``start(name)``, ``write`` deflated bytes, ``end(crc, compressed, size)``; ``close`` once at the end.

    Only writes to ``sink`` (constant memory: the central directory keeps a few numbers per entry).
    """

    def __init__(self, sink: Callable[[bytes], object]) -> None:
        self._sink = sink
        self._entries: list[_Entry] = []
        self._current: _Entry | None = None
        self.offset = 0

    def _emit(self, data: bytes) -> None:
        if data:
            self._sink(data)
            self.offset += len(data)

    def start(self, name: str, date_time: tuple[int, int, int, int, int, int], *, zip64: bool) -> None:
        if self._current is not None:
            raise RuntimeError("the previous entry is not ended")
        try:
            encoded, flags = name.encode("ascii"), _DATA_DESCRIPTOR
        except UnicodeEncodeError:
            encoded, flags = name.encode("utf-8"), _DATA_DESCRIPTOR | _UTF8_NAME
        dos_time, dos_date = _dos_stamp(date_time)
        entry = _Entry(encoded, flags, dos_time, dos_date, self.offset, zip64)
        extra = struct.pack("<HHQQ", 1, 16, 0, 0) if zip64 else b""
        sizes = _MAX_32 if zip64 else 0
        version = _VERSION_ZIP64 if zip64 else _VERSION
        self._emit(
            _LOCAL.pack(
                b"PK\x03\x04",
                version,
                flags,
                _DEFLATED,
                dos_time,
                dos_date,
                0,
                sizes,
                sizes,
                len(encoded),
                len(extra),
            )
            + encoded
            + extra
        )
        self._current = entry

    def write(self, data: bytes) -> None:
        if self._current is None:
            raise RuntimeError("no entry started")
        self._emit(data)

    def end(self, crc: int, compressed_size: int, size: int) -> None:
        entry = self._current
        if entry is None:
            raise RuntimeError("no entry started")
        if not entry.zip64 and (size > _MAX_32 or compressed_size > _MAX_32):
            raise RuntimeError(f"{entry.name!r} passed 4 GiB without having been declared Zip64")
        entry.crc, entry.compressed_size, entry.size = crc, compressed_size, size
        if entry.zip64:
            descriptor = struct.pack("<4sLQQ", b"PK\x07\x08", crc, compressed_size, size)
        else:
            descriptor = struct.pack("<4sLLL", b"PK\x07\x08", crc, compressed_size, size)
        self._emit(descriptor)
        self._entries.append(entry)
        self._current = None

    def close(self) -> None:
        """Write the central directory and the end record(s)."""
        if self._current is not None:
            raise RuntimeError("the last entry is not ended")
        start = self.offset
        for entry in self._entries:
            self._emit(self._central_header(entry))
        size = self.offset - start
        count = len(self._entries)
        if count >= 0xFFFF or start > ZIP64_LIMIT or size > ZIP64_LIMIT:
            end64 = self.offset
            self._emit(
                _END64.pack(
                    b"PK\x06\x06", 44, _VERSION_ZIP64, _VERSION_ZIP64, 0, 0, count, count, size, start
                )
            )
            self._emit(_LOCATOR64.pack(b"PK\x06\x07", 0, end64, 1))
            count, size, start = min(count, 0xFFFF), min(size, _MAX_32), min(start, _MAX_32)
        self._emit(_END.pack(b"PK\x05\x06", 0, 0, count, count, size, start, 0))

    @staticmethod
    def _central_header(entry: _Entry) -> bytes:
        fields: list[int] = []
        size, compressed, offset = entry.size, entry.compressed_size, entry.offset
        if size > ZIP64_LIMIT or compressed > ZIP64_LIMIT:
            fields += [size, compressed]
            size = compressed = _MAX_32
        if offset > ZIP64_LIMIT:
            fields.append(offset)
            offset = _MAX_32
        extra = struct.pack(f"<HH{len(fields)}Q", 1, 8 * len(fields), *fields) if fields else b""
        version = _VERSION_ZIP64 if fields or entry.zip64 else _VERSION
        return (
            _CENTRAL.pack(
                b"PK\x01\x02",
                version,
                0,
                version,
                0,
                entry.flags,
                _DEFLATED,
                entry.dos_time,
                entry.dos_date,
                entry.crc,
                compressed,
                size,
                len(entry.name),
                len(extra),
                0,
                0,
                0,
                _EXTERNAL_ATTR,
                offset,
            )
            + entry.name
            + extra
        )
