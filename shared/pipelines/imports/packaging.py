"""Raw files and bundles as inputs of the package builder, ready packages validated, XML data checked.

- :func:`raw_entity`: one raw data file as an ``EntityFile`` with the route's entity configuration.
- :func:`open_zip`: a ready package (validated as-is) or a bundle (a zip of raw files without
  ``Manifest.xml``); :func:`bundle_entities`: one entity per file of a bundle.
- :func:`check_xml`: an XML data file must be well-formed and declare no DTD or entity (expat with the DTD
  and entity-declaration handlers refusing, so nothing is ever expanded).
"""

from __future__ import annotations

import zipfile
import zlib
from typing import IO, Protocol, cast
from xml.parsers import expat

from shared.packages.build import EntityFile
from shared.packages.errors import PackageRejected, RejectReason
from shared.packages.manifest import HEADER_NAME
from shared.packages.validate import PackageLimits, ValidatedPackage, validate_package
from shared.pipelines.imports.settings import EntityConfig, Route

__all__ = ["Readable", "bundle_entities", "check_package_xml", "check_xml", "open_zip", "raw_entity"]

CHUNK = 1024 * 1024


class Readable(Protocol):
    """What the package builder reads a data file through."""

    def read(self, size: int = -1, /) -> bytes: ...


def _entity_file(config: EntityConfig, file_name: str, stream: Readable, size: int | None) -> EntityFile:
    return EntityFile(
        entity_name=config.entity,
        file_name=file_name,
        stream=cast("IO[bytes]", stream),  # the builder only reads (and asks seekable(), answered False)
        source_format=config.format_for(file_name),
        field_map=dict(config.field_map) if config.field_map is not None else None,
        encoding=config.encoding,
        delimiter=config.delimiter,
        size=size,
        execution_unit=config.execution_unit,
        level_in_execution_unit=config.level,
        sequence_in_level=config.sequence,
        run_business_logic=config.run_business_logic,
        run_business_validation=config.run_business_validation,
    )


def _config_for(route: Route, file_name: str) -> EntityConfig:
    config = route.entity_for(file_name)
    if config is None:
        patterns = ", ".join(repr(e.file_pattern) for e in route.entities) or "none"
        raise PackageRejected(
            RejectReason.MAPPING_INVALID,
            f"route {route.name!r} has no entity for {file_name!r} (file patterns: {patterns})",
            entry=file_name,
        )
    return config


def raw_entity(route: Route, file_name: str, stream: Readable, size: int | None) -> EntityFile:
    """One raw data file as the builder's input, with the route's entity configuration for its name."""
    return _entity_file(_config_for(route, file_name), file_name, stream, size)


def open_zip(file: IO[bytes], limits: PackageLimits) -> ValidatedPackage | zipfile.ZipFile:
    """A ready package (validated) or, for a zip without ``Manifest.xml``, the open bundle of raw files.

    The entry checks (names, sizes, ratios, encryption, count) run in both cases before this returns.
    """
    try:
        return validate_package(file, limits=limits)
    except PackageRejected as exc:
        if exc.reason_code is not RejectReason.MANIFEST_MISSING:
            raise
    file.seek(0)
    archive = zipfile.ZipFile(file)
    names = [i.filename for i in archive.infolist() if not i.is_dir()]
    if any(n.rsplit("/", 1)[-1].casefold() == HEADER_NAME.casefold() for n in names):
        archive.close()
        raise PackageRejected(
            RejectReason.MANIFEST_MISSING,
            "the zip holds PackageHeader.xml but no Manifest.xml: a data package must have both",
        )
    if not names:
        archive.close()
        raise PackageRejected(RejectReason.EMPTY_FILE, "the zip holds no files")
    return archive


def bundle_entities(route: Route, archive: zipfile.ZipFile) -> list[EntityFile]:
    """Every file of a bundle as one entity of the package to build (by the route's file patterns)."""
    files = []
    for info in archive.infolist():
        if info.is_dir():
            continue
        name = info.filename.rsplit("/", 1)[-1]
        config = _config_for(route, name)
        if config.format_for(name).strip().lower().startswith("xml"):
            check_xml(name, _GuardedEntry(archive, info))
        files.append(_entity_file(config, name, _GuardedEntry(archive, info), info.file_size))
    return files


def check_package_xml(file: IO[bytes], package: ValidatedPackage) -> None:
    """Every XML-format data file of a ready package must pass :func:`check_xml` too."""
    with zipfile.ZipFile(file) as archive:
        names = {i.filename.casefold(): i for i in archive.infolist()}
        for entity in package.manifest.entities:
            info = names.get(entity.input_file_path.replace("\\", "/").casefold())
            if info is not None and entity.source_format.strip().lower().startswith("xml"):
                check_xml(info.filename, _GuardedEntry(archive, info))


class _GuardedEntry:
    """A zip entry opened lazily; CRC and inflate errors become ``PackageRejected(unreadable_file)``."""

    def __init__(self, archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> None:
        self._archive, self._info = archive, info
        self._stream: IO[bytes] | None = None

    def read(self, size: int = -1) -> bytes:
        try:
            if self._stream is None:
                self._stream = self._archive.open(self._info)
            return self._stream.read(size)
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as exc:
            raise PackageRejected(
                RejectReason.UNREADABLE_FILE,
                f"{self._info.filename!r} cannot be read from the zip ({type(exc).__name__}: {exc})",
                entry=self._info.filename,
            ) from None

    def seekable(self) -> bool:
        return False


class _Refused(Exception):
    pass


def check_xml(name: str, stream: Readable) -> None:
    """Well-formed XML without DTD or entity declarations (read to the end, constant memory)."""
    parser = expat.ParserCreate()

    def refuse(*_: object) -> None:
        raise _Refused

    parser.StartDoctypeDeclHandler = refuse
    parser.EntityDeclHandler = refuse
    parser.ExternalEntityRefHandler = refuse  # type: ignore[assignment]
    try:
        while chunk := stream.read(CHUNK):
            parser.Parse(chunk, False)
        parser.Parse(b"", True)
    except _Refused:
        raise PackageRejected(
            RejectReason.MANIFEST_UNSAFE,
            f"{name!r} declares a DTD or an entity (<!DOCTYPE/<!ENTITY); XML data files may not",
            entry=name,
        ) from None
    except expat.ExpatError as exc:
        raise PackageRejected(
            RejectReason.UNREADABLE_FILE,
            f"{name!r} is not well-formed XML ({expat.errors.messages[exc.code]} at line {exc.lineno})",
            entry=name,
        ) from None
