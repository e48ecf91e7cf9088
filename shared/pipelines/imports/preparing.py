"""What D365 will receive for one input, made while the input is read once and hashed.

| input                 | recurring, File job    | recurring, package job | package route                    |
|-----------------------|------------------------|------------------------|----------------------------------|
| raw CSV/TXT           | spooled, checked as is | packaged to a temp file| packaged straight into D365's SAS|
|                       |                        |                        | URL while read (streaming)       |
| raw XML / XLSX        | spooled, checked as is | spooled, checked,      | spooled, checked, packaged       |
|                       |                        | packaged               |                                  |
| zip with Manifest.xml | refused                | validated, sent as is  | validated, uploaded as is        |
| zip without (bundle)  | refused                | one package, an entity | one package, an entity per file  |
|                       |                        | per file               |                                  |

The streaming column is the one big files take: the content hash is only known at the end, so the upload
happens before the ledger is asked (a duplicate then costs an unused upload, never an import). Every other
case is spooled first, so the ledger decides before anything leaves.
"""

from __future__ import annotations

import logging
import tempfile
import uuid
from contextlib import suppress
from dataclasses import dataclass, field
from typing import IO

from shared.context import AppContext
from shared.d365.dmf import DmfClient
from shared.d365.errors import D365Error
from shared.packages.build import BuiltPackage, EntityFile, build_package
from shared.packages.errors import PackageRejected, RejectReason
from shared.packages.validate import ValidatedPackage, validate_data_file
from shared.pipelines.imports.ledger import InputRef
from shared.pipelines.imports.packaging import (
    bundle_entities,
    check_package_xml,
    check_xml,
    open_zip,
    raw_entity,
)
from shared.pipelines.imports.routing import InputKind, RouteMatch
from shared.pipelines.imports.send import Deferred
from shared.pipelines.imports.settings import DEFAULT_FORMATS, ImportSettings, Route
from shared.pipelines.imports.streams import HashingReader, blob_chunks, spool, stream_to_upload

__all__ = ["Prepared", "prepare"]

log = logging.getLogger(__name__)

# Ranged reads of the input: 6 MiB each, one ahead of the consumer. Azurite (the local stack) reads any range
# of at most 4 MiB twice, to compute a Content-MD5 nobody asked for: with 4 MiB ranges that doubled its CPU
# per GiB read, and on a shared machine Azurite is the bottleneck. One 6 MiB range ahead keeps the peak RSS
# where two 4 MiB ranges had it (docs/benchmarks.md, imports_1gb).
READ_RANGE = 6 * 1024 * 1024
READ_AHEAD = 1


@dataclass
class Prepared:
    """The hashed input and what to send: ``body`` (seekable) or a package already at ``uploaded_url``."""

    sha256: str
    size: int
    entities: tuple[str, ...]
    is_package: bool
    body: IO[bytes] | None = None
    uploaded_url: str | None = field(default=None, repr=False)  # carries a SAS signature: never logged
    files: list[IO[bytes]] = field(default_factory=list, repr=False)

    def package_url(self, dmf: DmfClient, route: str, drop_id: str, settings: ImportSettings) -> str:
        """The SAS URL of the package in D365's storage, uploading ``body`` there first if needed."""
        if self.uploaded_url is not None:
            return self.uploaded_url
        assert self.body is not None
        try:
            target = dmf.get_azure_write_url(_unique_name(route, drop_id))
            self.body.seek(0, 2)
            length = self.body.tell()
            self.body.seek(0)
            dmf.upload_package(target, self.body, length=length, max_concurrency=settings.upload_concurrency)
        except D365Error as exc:
            raise Deferred(
                "upload_failed", f"the package could not be uploaded to D365's storage: {exc}"
            ) from exc
        self.uploaded_url = target.blob_url
        return target.blob_url

    def close(self) -> None:
        for file in self.files:
            file.close()


def _unique_name(route: str, drop_id: str) -> str:
    return f"{route}-{drop_id[:12]}-{uuid.uuid4().hex[:8]}.zip"


def _format(route: Route, file_name: str) -> str:
    config = route.entity_for(file_name)
    if config is not None:
        return config.format_for(file_name)
    return DEFAULT_FORMATS.get("." + file_name.rsplit(".", 1)[-1].lower(), "CSV-Unicode")


def _limit(route: Route, settings: ImportSettings, kind: str) -> int:
    general = settings.limits.max_package_bytes if kind == InputKind.ZIP else settings.limits.max_entry_bytes
    return min(general, route.max_file_bytes) if route.max_file_bytes else general


def _check_size(drop: InputRef, limit: int, file_name: str) -> None:
    if drop.size == 0:
        raise PackageRejected(RejectReason.EMPTY_FILE, f"{file_name!r} is empty", entry=file_name)
    if drop.size > limit:
        raise PackageRejected(
            RejectReason.FILE_TOO_LARGE,
            f"{file_name!r} is {drop.size} bytes; the limit for this route is {limit} bytes",
            entry=file_name,
        )


def prepare(
    context: AppContext, settings: ImportSettings, match: RouteMatch, drop: InputRef, dmf: DmfClient
) -> Prepared:
    """Read the input once (hashing it) into what D365 will receive; ``PackageRejected`` for bad input."""
    route, name = match.route, match.file_name
    limit = _limit(route, settings, match.kind)
    _check_size(drop, limit, name)
    blob = context.store.blob(drop.container, drop.name)
    chunks = blob_chunks(blob, drop.etag, drop.size, chunk=READ_RANGE, ahead=READ_AHEAD)
    reader = HashingReader(chunks, name=name, limit=limit)
    try:
        return _prepare(settings, match, drop, dmf, reader)
    finally:
        # read to its end by now, or abandoned (rejected, deferred): stop its threads. After a failed upload
        # the package build may still be inside ``reader.read`` (``stream_to_upload`` waits only so long):
        # its chunk generator cannot be closed then ("generator already executing"); that error must not
        # replace the real one, and the cancelled build ends the generator itself.
        with suppress(ValueError):
            reader.close()


def _prepare(
    settings: ImportSettings,
    match: RouteMatch,
    drop: InputRef,
    dmf: DmfClient,
    reader: HashingReader,
) -> Prepared:
    route, name = match.route, match.file_name
    if match.kind == InputKind.ZIP:
        return _zip(route, settings, reader, name)
    source_format = _format(route, name)
    if route.is_recurring and route.send_as == "file":
        spooled = spool(reader)
        prepared = Prepared(
            spooled.sha256, spooled.size, (route.entity,), False, spooled.file, files=[spooled.file]
        )
        try:
            validate_data_file(name, spooled.file, source_format, limits=settings.limits)
            _check_xml_file(name, source_format, spooled.file)
        except BaseException:
            prepared.close()
            raise
        spooled.file.seek(0)
        return prepared
    if source_format.lower().startswith("csv"):
        if not route.is_recurring:
            return _stream_to_d365(route, settings, reader, name, drop, dmf)
        built, file = _build_to_file(route, settings, [raw_entity(route, name, reader, drop.size)])
        reader.drain()
        return Prepared(reader.sha256, reader.size, _entities(built), True, file, files=[file])
    spooled = spool(reader)
    try:
        _check_xml_file(name, source_format, spooled.file)
        if source_format.strip().lower() == "excel":
            validate_data_file(name, spooled.file, source_format, limits=settings.limits)
        spooled.file.seek(0)
        built, file = _build_to_file(route, settings, [raw_entity(route, name, spooled.file, spooled.size)])
    finally:
        spooled.file.close()
    return Prepared(spooled.sha256, spooled.size, _entities(built), True, file, files=[file])


def _check_xml_file(name: str, source_format: str, file: IO[bytes]) -> None:
    if source_format.strip().lower().startswith("xml"):
        file.seek(0)
        check_xml(name, file)
        file.seek(0)


def _entities(package: BuiltPackage | ValidatedPackage) -> tuple[str, ...]:
    return tuple(e.entity_name for e in package.manifest.entities)


def _build_to_file(
    route: Route, settings: ImportSettings, files: list[EntityFile]
) -> tuple[BuiltPackage, IO[bytes]]:
    file = tempfile.TemporaryFile(prefix="import-package-")  # noqa: SIM115 - owned by Prepared
    try:
        built = build_package(
            file,
            files,
            definition_group=route.definition_group or route.name,
            package_version=route.package_version,
            compresslevel=settings.compression_level,
        )
        file.seek(0)
    except BaseException:
        file.close()
        raise
    return built, file


def _zip(route: Route, settings: ImportSettings, reader: HashingReader, name: str) -> Prepared:
    if route.is_recurring and route.send_as == "file":
        raise PackageRejected(
            RejectReason.INVALID_FILE_NAME,
            f"route {route.name!r} enqueues single data files to a File job; {name!r} is a zip",
            entry=name,
        )
    spooled = spool(reader)
    try:
        opened = open_zip(spooled.file, settings.limits)
        if isinstance(opened, ValidatedPackage):
            if route.accept == "raw":
                raise PackageRejected(
                    RejectReason.INVALID_FILE_NAME,
                    f"route {route.name!r} accepts data files only; {name!r} is a data package",
                    entry=name,
                )
            check_package_xml(spooled.file, opened)
            spooled.file.seek(0)
            return Prepared(
                spooled.sha256, spooled.size, _entities(opened), True, spooled.file, files=[spooled.file]
            )
        with opened:
            if route.accept == "package":
                raise PackageRejected(
                    RejectReason.MANIFEST_MISSING,
                    f"{name!r} has no Manifest.xml; route {route.name!r} accepts ready data packages only",
                    entry=name,
                )
            built, file = _build_to_file(route, settings, bundle_entities(route, opened))
    except BaseException:
        spooled.file.close()
        raise
    spooled.file.close()
    return Prepared(spooled.sha256, spooled.size, _entities(built), True, file, files=[file])


def _stream_to_d365(
    route: Route, settings: ImportSettings, reader: HashingReader, name: str, drop: InputRef, dmf: DmfClient
) -> Prepared:
    """Package the raw file straight into D365's storage: one read of the input, constant memory."""
    try:
        target = dmf.get_azure_write_url(_unique_name(route.name, drop.drop_id))
    except D365Error as exc:
        raise Deferred("upload_failed", f"D365 handed out no upload URL: {exc}") from exc

    def build(sink: IO[bytes]) -> BuiltPackage:
        built = build_package(
            sink,
            [raw_entity(route, name, reader, drop.size)],
            definition_group=route.definition_group or route.name,
            package_version=route.package_version,
            compresslevel=settings.compression_level,
        )
        reader.drain()
        return built

    try:
        built, uploaded = stream_to_upload(
            build,
            lambda chunks: dmf.upload_package(target, chunks, max_concurrency=settings.upload_concurrency),
        )
    except D365Error as exc:
        raise Deferred(
            "upload_failed", f"the package could not be uploaded to D365's storage: {exc}"
        ) from exc
    log.info("packaged %s (%d bytes, sha256 %s) into %d bytes (deflate: %s), %d blocks", name, reader.size,
             reader.sha256[:16], uploaded.bytes, built.deflate, uploaded.blocks)  # fmt: skip
    return Prepared(reader.sha256, reader.size, _entities(built), True, uploaded_url=target.blob_url)
