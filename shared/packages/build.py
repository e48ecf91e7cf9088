"""Build a DMF data package (zip) from raw data files, streaming into any writable sink.

Memory stays constant whatever the file size: data is read in ``chunk_size`` pieces, deflated on a small
thread pool in bounded pieces (:mod:`shared.packages.parallel_deflate`, with Intel ISA-L at levels 1-3 when
``isal`` is installed; deflate is most of the CPU a big CSV costs) and written front to back with data
descriptors (:mod:`shared.packages.zip_stream`), so an upload stream works as sink; Zip64 is switched on
for entries that may pass 2 GiB. Each file becomes one entity; several files make one package with several
entities, sequenced in the given order unless configured. The zip entry and the manifest's
``InputFilePath`` keep the file's original name (peers §5). Entry order follows Microsoft's sample: data
files, then ``Manifest.xml``, then ``PackageHeader.xml``.

``CSV-Unicode`` files are transcoded on the fly to what D365 needs (ref §7.3): UTF-16 LE with BOM and CRLF
line endings, from UTF-8 (BOM or not), UTF-16 (BOM) or a configured ``encoding``. Other formats are copied
byte for byte. The field mapping comes from the configuration (column → staging field) or, for CSV, from
the file's header row (each column maps to its upper-cased name, the staging-field convention of ref §7.3).
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import IO, Protocol

from shared.packages.csv_text import HeaderRow, Transcoder
from shared.packages.errors import PackageRejected, RejectReason
from shared.packages.manifest import (
    DEFAULT_PACKAGE_VERSION,
    HEADER_NAME,
    MANIFEST_NAME,
    EntityMap,
    Manifest,
    PackageEntity,
    PackageHeader,
    render_header,
    render_manifest,
)
from shared.packages.parallel_deflate import DeflateEngine, ParallelDeflater, default_workers, deflate_engine
from shared.packages.validate import check_entry_name, is_unicode_csv
from shared.packages.zip_stream import ZipStreamWriter

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "DEFAULT_COMPRESSLEVEL",
    "BuiltEntity",
    "BuiltPackage",
    "EntityFile",
    "ZipSink",
    "build_package",
    "entry_name_for",
]

DEFAULT_CHUNK_SIZE = 1024 * 1024
# Deflate level 1 builds about 4x faster than the usual 6 for ~20% more bytes on CSV text (measured with
# bench/packages.py): the better trade for big files, whose upload is not the bottleneck.
DEFAULT_COMPRESSLEVEL = 1
_ZIP64_THRESHOLD = (1 << 31) - (64 << 20)  # Zip64 is decided up front: the sink cannot seek back
_BOMS = ((b"\xef\xbb\xbf", "utf-8"), (b"\xff\xfe", "utf-16-le"), (b"\xfe\xff", "utf-16-be"))


@dataclass(frozen=True)
class EntityFile:
    """One raw data file to import as one entity.

    ``stream`` is read once, sequentially. ``field_map`` maps file column → staging field (only those
    columns are mapped); None derives it from the CSV header row (required for non-CSV formats).
    ``execution_unit``/``level_in_execution_unit``/``sequence_in_level`` default to 1/1/<position>.
    """

    entity_name: str
    file_name: str
    stream: IO[bytes]
    source_format: str = "CSV-Unicode"
    field_map: Mapping[str, str] | None = None
    encoding: str | None = None  # input encoding when it has no BOM (default UTF-8)
    delimiter: str = ","
    size: int | None = None  # input size when known (decides Zip64 early)
    execution_unit: int = 1
    level_in_execution_unit: int = 1
    sequence_in_level: int | None = None
    run_business_logic: bool = True
    run_business_validation: bool = True


@dataclass(frozen=True)
class BuiltEntity:
    entity_name: str
    file_name: str
    columns: tuple[str, ...]  # header row columns (CSV), empty otherwise
    input_bytes: int
    output_bytes: int


@dataclass(frozen=True)
class BuiltPackage:
    manifest: Manifest
    header: PackageHeader
    entities: tuple[BuiltEntity, ...]
    zip_bytes: int  # bytes written to the sink
    deflate: str = "zlib"  # the engine that deflated the data files (``isal`` or ``zlib``)


class ZipSink(Protocol):
    """Where a package is written: ``write`` and ``flush`` (seeking is never needed)."""

    def write(self, data: bytes, /) -> object: ...
    def flush(self) -> None: ...


class _CountingSink:
    """Write-only view of the sink that counts bytes."""

    def __init__(self, sink: ZipSink) -> None:
        self._sink = sink
        self.count = 0

    def write(self, data: bytes) -> int:
        self._sink.write(data)
        self.count += len(data)
        return len(data)

    def tell(self) -> int:
        return self.count

    def flush(self) -> None:
        self._sink.flush()


def entry_name_for(file_name: str) -> str:
    """The zip entry (and ``InputFilePath``) for a file: its original base name, path stripped."""
    return file_name.replace("\\", "/").rsplit("/", 1)[-1].strip()


class _Reader:
    """Chunks of a data file, with the encoding found from its BOM (the BOM itself is consumed)."""

    def __init__(self, file: EntityFile, chunk_size: int) -> None:
        self._stream = file.stream
        self._chunk_size = chunk_size
        self.bytes_read = 0
        first = self._read()
        self.encoding = file.encoding or "utf-8"
        self.bom = b""
        for bom, encoding in _BOMS:
            if first.startswith(bom):
                first, self.encoding, self.bom = first[len(bom) :], encoding, bom
                break
        self._first: bytes | None = first

    def _read(self) -> bytes:
        data = self._stream.read(self._chunk_size)
        self.bytes_read += len(data)
        return data

    def chunks(self) -> Iterator[bytes]:
        if self._first:
            yield self._first
        self._first = None
        while data := self._read():
            yield data


def _entity_maps(file: EntityFile, entry: str, columns: tuple[str, ...] | None) -> tuple[EntityMap, ...]:
    if file.field_map is None:
        if columns is None:
            raise PackageRejected(
                RejectReason.MAPPING_INVALID,
                f"{entry!r} ({file.source_format}) needs a configured field mapping: only CSV files "
                "can be mapped from their header row",
                entry=entry,
            )
        return tuple(EntityMap(xml_field=c, entity_field=c.upper()) for c in columns)
    if not file.field_map:
        raise PackageRejected(
            RejectReason.MAPPING_INVALID, f"the field mapping of {entry!r} is empty", entry=entry
        )
    if columns is None:
        return tuple(EntityMap(xml_field=k, entity_field=v) for k, v in file.field_map.items())
    by_key = {c.casefold(): c for c in columns}
    missing = [k for k in file.field_map if k.casefold() not in by_key]
    if missing:
        raise PackageRejected(
            RejectReason.MAPPING_INVALID,
            f"{entry!r}: mapped column(s) {', '.join(missing)} are not in the header row "
            f"({', '.join(columns)})",
            entry=entry,
        )
    return tuple(EntityMap(xml_field=by_key[k.casefold()], entity_field=v) for k, v in file.field_map.items())


def _remaining(stream: IO[bytes]) -> int | None:
    """Bytes left in a seekable stream (None when it cannot tell): decides Zip64 without a size hint."""
    try:
        if not stream.seekable():
            return None
        here = stream.tell()
        end = stream.seek(0, 2)
        stream.seek(here)
    except (AttributeError, OSError, ValueError):
        return None
    return end - here


def _write_entity(
    archive: ZipStreamWriter,
    pool: tuple[ThreadPoolExecutor, int],
    file: EntityFile,
    entry: str,
    chunk_size: int,
    date_time: tuple[int, int, int, int, int, int],
    compresslevel: int,
    engine: DeflateEngine,
) -> tuple[BuiltEntity, tuple[str, ...] | None]:
    unicode_csv = is_unicode_csv(file.source_format)
    is_csv = file.source_format.strip().lower().startswith("csv")
    size = file.size if file.size is not None else _remaining(file.stream)
    reader = _Reader(file, chunk_size)
    header = HeaderRow(entry, file.delimiter) if is_csv else None
    # only CSV-Unicode is re-encoded, so only it must decode cleanly; other CSVs are read for the header
    transcoder = Transcoder(reader.encoding, entry, strict=unicode_csv) if is_csv else None
    # UTF-16 output is at most twice the input, plus CRs added to LFs: a safe bound for the Zip64 choice
    bound = None if size is None else size * (4 if unicode_csv else 1) + 4
    zip64 = bound is None or bound > _ZIP64_THRESHOLD
    written = 0
    archive.start(entry, date_time, zip64=zip64)
    out = ParallelDeflater(archive.write, compresslevel, pool[0], depth=pool[1] + 1, engine=engine)
    try:
        if unicode_csv:
            out.write(b"\xff\xfe")
            written += 2
        elif reader.bom:
            out.write(reader.bom)  # copied byte for byte: put back the BOM the reader consumed
            written += len(reader.bom)
        for chunk in reader.chunks():
            if transcoder is None or header is None:
                out.write(chunk)
                written += len(chunk)
                continue
            text = transcoder.text(chunk)
            header.feed(text)
            if unicode_csv:
                data = transcoder.crlf(text).encode("utf-16-le")
                out.write(data)
                written += len(data)
            else:
                out.write(chunk)
                written += len(chunk)
        if transcoder is not None and header is not None:
            tail = transcoder.text(b"", final=True)
            header.feed(tail)
            if unicode_csv:
                data = transcoder.crlf(tail, final=True).encode("utf-16-le")
                out.write(data)
                written += len(data)
        out.finish()
    except BaseException:
        out.abandon()
        raise
    archive.end(out.crc, out.compressed_size, out.size)
    if reader.bytes_read == len(reader.bom):
        raise PackageRejected(RejectReason.EMPTY_FILE, f"{entry!r} is empty", entry=entry)
    columns = None
    if header is not None:
        header.finish()
        columns = header.columns
        if not header.has_data:
            raise PackageRejected(
                RejectReason.EMPTY_FILE, f"{entry!r} has a header row but no data rows", entry=entry
            )
    built = BuiltEntity(file.entity_name, entry, columns or (), reader.bytes_read, written)
    return built, columns


def build_package(
    sink: ZipSink,
    files: Sequence[EntityFile],
    *,
    definition_group: str,
    description: str = "",
    package_version: str = DEFAULT_PACKAGE_VERSION,
    compresslevel: int = DEFAULT_COMPRESSLEVEL,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    date_time: tuple[int, int, int, int, int, int] | None = None,
    fast_deflate: bool = True,
) -> BuiltPackage:
    """Write a package zip with one entity per file into ``sink``; the sink is not closed.

    Raises ``PackageRejected`` for bad input (empty file, unreadable header row, wrong encoding, unsafe or
    duplicate file name, mapping to a missing column) — possibly after part of the zip was written, so
    write to a temporary location or an uncommitted block upload. ``date_time`` stamps the entries
    (default: now, UTC). ``fast_deflate`` lets levels 1-3 use ISA-L when installed (see
    :func:`~shared.packages.parallel_deflate.deflate_engine`); False keeps the stdlib zlib.
    """
    if not files:
        raise ValueError("a package needs at least one data file")
    if not definition_group.strip():
        raise ValueError("definition_group (the data project name) must not be empty")
    stamp = date_time or time.gmtime()[:6]
    entries = [entry_name_for(f.file_name) for f in files]
    _check_names(entries)
    counting = _CountingSink(sink)
    archive = ZipStreamWriter(counting.write)
    entities: list[PackageEntity] = []
    built: list[BuiltEntity] = []
    workers = default_workers()
    engine = deflate_engine(compresslevel, fast=fast_deflate)
    with ThreadPoolExecutor(workers, thread_name_prefix="package-deflate") as pool:
        for position, (file, entry) in enumerate(zip(files, entries, strict=True), start=1):
            if not file.entity_name.strip():
                raise ValueError(f"entity_name of {entry!r} must not be empty")
            result, columns = _write_entity(
                archive, (pool, workers), file, entry, chunk_size, stamp, compresslevel, engine
            )
            built.append(result)
            entities.append(
                PackageEntity(
                    entity_name=file.entity_name,
                    input_file_path=entry,
                    source_format=file.source_format,
                    entity_maps=_entity_maps(file, entry, columns),
                    execution_unit=file.execution_unit,
                    level_in_execution_unit=file.level_in_execution_unit,
                    sequence_in_level=file.sequence_in_level or position,
                    run_business_logic=file.run_business_logic,
                    run_business_validation=file.run_business_validation,
                )
            )
        manifest = Manifest(definition_group, description or definition_group, tuple(entities))
        header = PackageHeader(description=description or definition_group, package_version=package_version)
        for name, xml in ((MANIFEST_NAME, render_manifest(manifest)), (HEADER_NAME, render_header(header))):
            archive.start(name, stamp, zip64=False)
            deflater = ParallelDeflater(archive.write, compresslevel, None, engine=engine)
            deflater.write(xml)
            deflater.finish()
            archive.end(deflater.crc, deflater.compressed_size, deflater.size)
    archive.close()
    counting.flush()
    return BuiltPackage(manifest, header, tuple(built), counting.count, engine.name)


def _check_names(entries: list[str]) -> None:
    seen: set[str] = set()
    reserved = {MANIFEST_NAME.casefold(), HEADER_NAME.casefold()}
    for entry in entries:
        try:
            check_entry_name(entry)
        except PackageRejected as exc:
            raise PackageRejected(RejectReason.INVALID_FILE_NAME, exc.message, entry=entry) from None
        key = entry.casefold()
        if key in reserved:
            raise PackageRejected(
                RejectReason.INVALID_FILE_NAME,
                f"a data file cannot be called {entry!r}: the name is reserved for the package's own XML",
                entry=entry,
            )
        if key in seen:
            raise PackageRejected(
                RejectReason.DUPLICATE_FILE_NAME,
                f"two data files are called {entry!r}; file names must differ inside one package",
                entry=entry,
            )
        seen.add(key)
