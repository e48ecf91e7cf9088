"""Check a data package (or a raw data file) before anything is sent to D365.

Every failure raises :class:`~shared.packages.errors.PackageRejected` with a stable ``reason_code`` and a
message a person can act on. Checks: a readable zip; entry names that are safe to extract anywhere (no
absolute paths, ``..``, backslashes, drive letters, control characters, duplicates); zip-bomb limits (entry
count, declared and *actual* uncompressed size, compression ratio — every entry is inflated, streaming, to
verify it); encrypted or exotically compressed entries; ``Manifest.xml`` / ``PackageHeader.xml`` present and
parseable without DTDs; every manifest entity's data file present, non-empty and readable; the encoding
the declared source format needs (``CSV-Unicode`` = UTF-16 LE with BOM, ref §7.3; ``EXCEL`` = an OOXML zip).
"""

from __future__ import annotations

import re
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Self

from shared.packages.errors import PackageRejected, RejectReason
from shared.packages.formats import FormatCheck, is_unicode_csv
from shared.packages.manifest import (
    HEADER_NAME,
    MANIFEST_NAME,
    MAX_XML_BYTES,
    Manifest,
    PackageEntity,
    PackageHeader,
    parse_header,
    parse_manifest,
)
from shared.settings_reader import SettingsReader

__all__ = [
    "DataFileInfo",
    "EntryInfo",
    "PackageLimits",
    "PackageRejected",
    "RejectReason",
    "ValidatedPackage",
    "check_entry_name",
    "is_unicode_csv",
    "validate_data_file",
    "validate_package",
]

GiB = 1024**3


@dataclass(frozen=True)
class PackageLimits:
    """Size limits for packages and data files.

    App settings (all optional): ``PACKAGE_MAX_BYTES`` (zip size, default 2 GiB), ``PACKAGE_MAX_ENTRIES``
    (default 1000), ``PACKAGE_MAX_UNCOMPRESSED_BYTES`` (all entries inflated, default 8 GiB),
    ``PACKAGE_MAX_ENTRY_BYTES`` (one entry or raw file, default 4 GiB), ``PACKAGE_MAX_RATIO`` (inflated /
    compressed size of one entry, default 1000).
    """

    max_package_bytes: int = 2 * GiB
    max_entries: int = 1000
    max_uncompressed_bytes: int = 8 * GiB
    max_entry_bytes: int = 4 * GiB
    max_ratio: float = 1000.0
    ratio_min_bytes: int = 1024 * 1024  # smaller entries' ratios are not checked (tiny files compress wildly)

    @classmethod
    def from_reader(cls, reader: SettingsReader) -> Self:
        top = 1 << 50
        return cls(
            max_package_bytes=reader.integer(
                "PACKAGE_MAX_BYTES", cls.max_package_bytes, minimum=1, maximum=top
            ),
            max_entries=reader.integer("PACKAGE_MAX_ENTRIES", cls.max_entries, minimum=3, maximum=1_000_000),
            max_uncompressed_bytes=reader.integer(
                "PACKAGE_MAX_UNCOMPRESSED_BYTES", cls.max_uncompressed_bytes, minimum=1, maximum=top
            ),
            max_entry_bytes=reader.integer(
                "PACKAGE_MAX_ENTRY_BYTES", cls.max_entry_bytes, minimum=1, maximum=top
            ),
            max_ratio=reader.number("PACKAGE_MAX_RATIO", cls.max_ratio, minimum=1.0),
        )


@dataclass(frozen=True)
class EntryInfo:
    name: str
    size: int  # inflated bytes (verified)
    compressed_size: int


@dataclass(frozen=True)
class ValidatedPackage:
    manifest: Manifest
    header: PackageHeader
    entries: tuple[EntryInfo, ...]
    uncompressed_bytes: int


@dataclass(frozen=True)
class DataFileInfo:
    name: str
    size: int
    encoding: str  # "utf-16-le", "utf-16-be", "utf-8-sig", "utf-8" or "binary"


_DRIVE = re.compile(r"^[A-Za-z]:")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_READ_SIZE = 1024 * 1024


def _reject(reason: RejectReason, message: str, entry: str | None = None) -> PackageRejected:
    return PackageRejected(reason, message, entry=entry)


def check_entry_name(name: str) -> None:
    """Raise ``PackageRejected(unsafe_path)`` unless ``name`` is a plain relative path."""
    shown = name.encode("unicode_escape").decode("ascii")[:200]
    problem = None
    if not name or not name.strip():
        problem = "an empty name"
    elif _CONTROL.search(name):
        problem = "control characters"
    elif "\\" in name:
        problem = "a backslash (Windows path separator)"
    elif name.startswith("/"):
        problem = "an absolute path"
    elif _DRIVE.match(name):
        problem = "a drive letter"
    elif any(part in ("..", ".") for part in name.split("/")):
        problem = "a '.' or '..' path segment"
    elif len(name) > 1024:
        problem = "more than 1024 characters"
    if problem:
        raise _reject(
            RejectReason.UNSAFE_PATH,
            f"zip entry {shown!r} has {problem}; a package may only hold plain relative file names",
            entry=name,
        )


def _size(source: IO[bytes]) -> int:
    position = source.tell()
    try:
        return source.seek(0, 2)
    finally:
        source.seek(position)


def _check_infos(infos: list[zipfile.ZipInfo], limits: PackageLimits) -> None:
    if len(infos) > limits.max_entries:
        raise _reject(
            RejectReason.TOO_MANY_ENTRIES,
            f"the package has {len(infos)} entries; at most {limits.max_entries} are accepted",
        )
    seen: set[str] = set()
    declared_total = 0
    for info in infos:
        name = info.filename
        check_entry_name(name)
        key = name.casefold()
        if key in seen:
            raise _reject(
                RejectReason.DUPLICATE_ENTRY, f"the package holds {name!r} more than once", entry=name
            )
        seen.add(key)
        if info.flag_bits & 0x1:
            raise _reject(
                RejectReason.ENCRYPTED_ENTRY, f"{name!r} is encrypted; D365 cannot read it", entry=name
            )
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise _reject(
                RejectReason.UNSUPPORTED_COMPRESSION,
                f"{name!r} uses zip compression method {info.compress_type}; only stored and deflate work",
                entry=name,
            )
        if info.file_size > limits.max_entry_bytes:
            raise _reject(
                RejectReason.FILE_TOO_LARGE,
                f"{name!r} inflates to {info.file_size} bytes; the limit is {limits.max_entry_bytes}",
                entry=name,
            )
        ratio = info.file_size / max(1, info.compress_size)
        if info.file_size >= limits.ratio_min_bytes and ratio > limits.max_ratio:
            raise _reject(
                RejectReason.ZIP_BOMB,
                f"{name!r} inflates {ratio:.0f}x ({info.compress_size} -> {info.file_size} bytes); more than "
                f"{limits.max_ratio:g}x looks like a zip bomb",
                entry=name,
            )
        declared_total += info.file_size
        if declared_total > limits.max_uncompressed_bytes:
            raise _reject(
                RejectReason.ZIP_BOMB,
                f"the package inflates to more than {limits.max_uncompressed_bytes} bytes in total",
            )


def _find(infos: dict[str, zipfile.ZipInfo], name: str) -> zipfile.ZipInfo | None:
    return infos.get(name) or infos.get(name.casefold())


def _read_small(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> bytes:
    if info.file_size > MAX_XML_BYTES:
        raise _reject(
            RejectReason.MANIFEST_INVALID,
            f"{info.filename} is {info.file_size} bytes; more than {MAX_XML_BYTES} is refused",
            entry=info.filename,
        )
    return b"".join(_chunks(archive, info))


def _chunks(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> Iterator[bytes]:
    """The entry's inflated bytes, streaming; CRC and inflate errors become ``unreadable_file``."""
    try:
        with archive.open(info) as stream:
            while chunk := stream.read(_READ_SIZE):
                yield chunk
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, RuntimeError, NotImplementedError) as exc:
        raise _reject(
            RejectReason.UNREADABLE_FILE,
            f"{info.filename!r} cannot be read from the zip ({type(exc).__name__}: {exc})",
            entry=info.filename,
        ) from None


def validate_package(source: IO[bytes], *, limits: PackageLimits | None = None) -> ValidatedPackage:
    """Validate a package zip read from a seekable binary file (its position is restored on return).

    Every entry is inflated (streaming, constant memory) so CRC errors and lying size headers are caught.
    """
    limits = limits or PackageLimits()
    start = source.tell()
    try:
        return _validate(source, limits)
    finally:
        source.seek(start)


def _validate(source: IO[bytes], limits: PackageLimits) -> ValidatedPackage:
    size = _size(source)
    if size == 0:
        raise _reject(RejectReason.EMPTY_FILE, "the package is an empty file")
    if size > limits.max_package_bytes:
        raise _reject(
            RejectReason.PACKAGE_TOO_LARGE,
            f"the package is {size} bytes; the limit is {limits.max_package_bytes}",
        )
    try:
        archive = zipfile.ZipFile(source)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, ValueError) as exc:
        raise _reject(RejectReason.NOT_A_ZIP, f"the package is not a readable zip file ({exc})") from None
    with archive:
        infos = archive.infolist()
        _check_infos(infos, limits)
        by_name = {i.filename: i for i in infos} | {i.filename.casefold(): i for i in infos}
        manifest_info = _find(by_name, MANIFEST_NAME)
        if manifest_info is None:
            raise _reject(
                RejectReason.MANIFEST_MISSING,
                "the package has no Manifest.xml at its root: it is not a DMF data package",
            )
        header_info = _find(by_name, HEADER_NAME)
        if header_info is None:
            raise _reject(
                RejectReason.HEADER_MISSING,
                "the package has no PackageHeader.xml at its root: it is not a DMF data package",
            )
        manifest = parse_manifest(_read_small(archive, manifest_info))
        header = parse_header(_read_small(archive, header_info))
        data_files = _check_manifest(manifest, by_name)
        entries = []
        total = 0
        for info in infos:
            if info.is_dir():
                continue
            check = data_files.get(info.filename)
            actual = 0
            for chunk in _chunks(archive, info):
                actual += len(chunk)
                total += len(chunk)
                if total > limits.max_uncompressed_bytes:
                    raise _reject(
                        RejectReason.ZIP_BOMB,
                        f"the package inflates to more than {limits.max_uncompressed_bytes} bytes in total",
                    )
                if check is not None:
                    check.feed(chunk)
            if check is not None:
                check.finish()
            entries.append(EntryInfo(info.filename, actual, info.compress_size))
    return ValidatedPackage(manifest, header, tuple(entries), total)


def _check_manifest(manifest: Manifest, by_name: dict[str, zipfile.ZipInfo]) -> dict[str, FormatCheck]:
    """Each entity's data file must be in the zip; returns a format check per data-file entry."""
    if not manifest.entities:
        raise _reject(
            RejectReason.MANIFEST_EMPTY, "Manifest.xml lists no entities: nothing would be imported"
        )
    checks: dict[str, FormatCheck] = {}
    for entity in manifest.entities:
        if not entity.entity_name:
            raise _reject(RejectReason.MANIFEST_INVALID, "Manifest.xml has an entity without an EntityName")
        info = _data_entry(entity, by_name)
        checks[info.filename] = FormatCheck(info.filename, entity.source_format)
    return checks


def _data_entry(entity: PackageEntity, by_name: dict[str, zipfile.ZipInfo]) -> zipfile.ZipInfo:
    path = entity.input_file_path
    if not path:
        raise _reject(
            RejectReason.MANIFEST_INVALID,
            f"entity {entity.entity_name!r} in Manifest.xml has no InputFilePath",
        )
    info = _find(by_name, path) or _find(by_name, path.replace("\\", "/"))
    if info is None:
        raise _reject(
            RejectReason.DATA_FILE_MISSING,
            f"entity {entity.entity_name!r} reads {path!r}, which is not in the package",
            entry=path,
        )
    return info


def validate_data_file(
    name: str, stream: IO[bytes], source_format: str, *, limits: PackageLimits | None = None
) -> DataFileInfo:
    """Validate a raw data file exactly as it would be sent (e.g. enqueued to a File job).

    Checks the name, the size limit, that it is not empty, and the encoding its source format needs
    (``CSV-Unicode``: UTF-16 LE with BOM; ``EXCEL``: an xlsx zip). Reads the stream to its end, streaming.
    ``build_package`` transcodes CSV itself, so files going into a built package need not pass this.
    """
    limits = limits or PackageLimits()
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    if not base.strip() or _CONTROL.search(base) or base in (".", ".."):
        raise _reject(RejectReason.INVALID_FILE_NAME, f"{name!r} is not a usable file name", entry=name)
    check = FormatCheck(base, source_format)
    while chunk := stream.read(_READ_SIZE):
        check.feed(chunk)
        if check.size > limits.max_entry_bytes:
            raise _reject(
                RejectReason.FILE_TOO_LARGE,
                f"{base!r} is larger than the limit of {limits.max_entry_bytes} bytes",
                entry=base,
            )
    check.finish()
    return DataFileInfo(base, check.size, check.encoding)
