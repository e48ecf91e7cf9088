"""Unpack a stored export package into its data files next to it, and describe it in a manifest record.

The zip is read from blob storage with ranged reads (zip needs random access: the directory is at the
end), each entry is streamed through decompression into its own blob (constant memory) while its size,
SHA-256 and row count are computed. Entries are untrusted input:

- names must be plain relative paths (no ``/`` or drive prefix, no ``..`` or ``.`` segments, no
  backslashes or control characters), unique, and at most 512 characters; directories are skipped;
- encrypted entries and unsupported compression are refused, corrupt data (bad CRC) is reported;
- at most ``max_files`` entries, ``max_file_bytes`` per entry and ``max_total_bytes`` in total, counted
  on the bytes actually produced (a zip bomb's declared sizes are not trusted).

A refused entry is listed under ``rejected`` with a reason code (``shared.packages.errors.RejectReason``)
and the others are still unpacked; the caller decides what a partial unpack means. Files are written
with overwrite: a rerun after a crash produces the same bytes under the same names.
"""

from __future__ import annotations

import io
import logging
import mimetypes
import zipfile
import zlib
from dataclasses import dataclass, field
from typing import Any

from azure.storage.blob import BlobClient

from shared.packages.errors import PackageRejected, RejectReason
from shared.packages.manifest import HEADER_NAME, MANIFEST_NAME, parse_manifest
from shared.pipelines.exports.blob_writer import BlockBlobWriter
from shared.pipelines.exports.counting import ContentStats, row_kind
from shared.status import utc_now
from shared.storage import BlobStore

__all__ = ["UnpackLimits", "UnpackResult", "check_entry_name", "describe_package"]

log = logging.getLogger(__name__)

READ_CHUNK = 1024 * 1024
RANGE_BUFFER = 4 * 1024 * 1024
MAX_NAME = 512
MAX_MANIFEST_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True)
class UnpackLimits:
    max_files: int = 1000
    max_file_bytes: int = 4 * 1024**3
    max_total_bytes: int = 16 * 1024**3


@dataclass
class UnpackResult:
    """The manifest record (JSON-ready) and whether every entry was handled."""

    record: dict[str, Any]
    rejected: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and not self.rejected


class _BlobRangeReader(io.RawIOBase):
    """A seekable read-only view of a blob: each read is one ranged GET (wrap in ``BufferedReader``)."""

    def __init__(self, blob: BlobClient, size: int) -> None:
        super().__init__()
        self.blob, self.size, self.position = blob, size, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.position, io.SEEK_END: self.size}[whence]
        self.position = max(0, base + offset)
        return self.position

    def readinto(self, buffer: Any) -> int:
        wanted = min(len(buffer), self.size - self.position)
        if wanted <= 0:
            return 0
        data = self.blob.download_blob(offset=self.position, length=wanted).readall()
        buffer[: len(data)] = data
        self.position += len(data)
        return len(data)


def check_entry_name(name: str) -> str | None:
    """Why a zip entry name is unsafe to use under a blob prefix, or None when it is fine."""
    if not name or len(name) > MAX_NAME:
        return "empty or longer than 512 characters"
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        return "contains control characters"
    if "\\" in name:
        return "contains a backslash"
    if name.startswith("/"):
        return "is an absolute path"
    segments = name.split("/")
    if ":" in segments[0]:
        return "starts with a drive or scheme prefix"
    if any(s in ("", ".", "..") for s in segments):
        return "has an empty, '.' or '..' path segment"
    return None


def _reject(rejected: list[dict[str, Any]], entry: str, code: RejectReason, message: str) -> None:
    rejected.append({"entry": entry[:MAX_NAME], "reason_code": code.value, "message": message})


def _manifest_entities(archive: zipfile.ZipFile, notes: list[str]) -> tuple[str, dict[str, dict[str, Any]]]:
    """(definition group, {file name: {entity, source_format}}) from Manifest.xml, tolerating its absence."""
    try:
        info = archive.getinfo(MANIFEST_NAME)
    except KeyError:
        notes.append("no Manifest.xml: entity names unknown")
        return "", {}
    if info.file_size > MAX_MANIFEST_BYTES:
        notes.append("Manifest.xml is too large to read")
        return "", {}
    try:
        with archive.open(info) as member:
            manifest = parse_manifest(member.read(MAX_MANIFEST_BYTES + 1))
    except PackageRejected as exc:
        notes.append(f"Manifest.xml not usable: {exc}")
        return "", {}
    except (zipfile.BadZipFile, zlib.error, NotImplementedError, RuntimeError, OSError) as exc:
        notes.append(f"Manifest.xml not readable: {exc}")
        return "", {}
    files = {
        e.input_file_path: {"entity": e.entity_name, "source_format": e.source_format}
        for e in manifest.entities
    }
    return manifest.definition_group_name, files


def describe_package(
    store: BlobStore,
    container: str,
    package: str,
    *,
    unpack_to: str | None,
    limits: UnpackLimits,
    about: dict[str, Any] | None = None,
) -> UnpackResult:
    """Read ``container/package``; with ``unpack_to`` (a prefix ending in ``/``) write each entry there.

    Returns the manifest record (``entities``, ``files`` with bytes/sha256/rows, ``rejected``); ``about``
    adds identifying fields (correlation or execution id). Never raises for bad package content.
    """
    blob = store.blob(container, package)
    properties = blob.get_blob_properties()
    record: dict[str, Any] = {
        "kind": "export-manifest",
        "package": f"{container}/{package}",
        "package_bytes": properties.size,
        "package_sha256": (properties.metadata or {}).get("sha256"),
        **(about or {}),
        "unpacked_to": f"{container}/{unpack_to}" if unpack_to else None,
        "created": utc_now(),
    }
    rejected: list[dict[str, Any]] = []
    notes: list[str] = []
    reader = io.BufferedReader(_BlobRangeReader(blob, properties.size), buffer_size=RANGE_BUFFER)
    try:
        archive = zipfile.ZipFile(reader)
    except (zipfile.BadZipFile, OSError) as exc:
        record.update(entities=[], files=[], rejected=[], notes=[f"not a zip package: {exc}"])
        return UnpackResult(record, error=f"{RejectReason.NOT_A_ZIP.value}: the package is not a zip file")
    with archive:
        definition_group, by_file = _manifest_entities(archive, notes)
        files = _entries(store, container, archive, unpack_to, limits, by_file, rejected)
    record["definition_group"] = definition_group or None
    record["entities"] = [
        {
            "entity": meta["entity"],
            "file": name,
            "source_format": meta["source_format"],
            **_facts(files, name),
        }
        for name, meta in by_file.items()
    ]
    record["files"] = files
    record["rejected"] = rejected
    record["notes"] = notes
    return UnpackResult(record, rejected=rejected)


def _facts(files: list[dict[str, Any]], name: str) -> dict[str, Any]:
    for item in files:
        if item["name"] == name:
            return {k: v for k, v in item.items() if k not in ("name", "compressed_bytes")}
    return {"missing": True}


def _entries(
    store: BlobStore,
    container: str,
    archive: zipfile.ZipFile,
    unpack_to: str | None,
    limits: UnpackLimits,
    by_file: dict[str, dict[str, Any]],
    rejected: list[dict[str, Any]],
) -> list[dict[str, Any]]:
    files: list[dict[str, Any]] = []
    seen: set[str] = set()
    total = 0
    entries = [info for info in archive.infolist() if not info.is_dir()]
    if len(entries) > limits.max_files:
        _reject(
            rejected,
            "*",
            RejectReason.TOO_MANY_ENTRIES,
            f"{len(entries)} entries; at most {limits.max_files} are unpacked",
        )
        entries = entries[: limits.max_files]
    for info in entries:
        name = info.filename
        problem = check_entry_name(name)
        if problem is not None:
            _reject(rejected, name, RejectReason.UNSAFE_PATH, f"entry name {problem}")
            continue
        if name in seen:
            _reject(rejected, name, RejectReason.DUPLICATE_ENTRY, "the name appears twice in the zip")
            continue
        seen.add(name)
        if info.flag_bits & 0x1:
            _reject(rejected, name, RejectReason.ENCRYPTED_ENTRY, "encrypted entries are not unpacked")
            continue
        allowed = min(limits.max_file_bytes, limits.max_total_bytes - total)
        if info.file_size > allowed:
            _reject(
                rejected,
                name,
                RejectReason.FILE_TOO_LARGE,
                f"declares {info.file_size} bytes, over {allowed}",
            )
            continue
        meta = by_file.get(name, {})
        kind = None if name in (MANIFEST_NAME, HEADER_NAME) else row_kind(name, meta.get("source_format"))
        facts = _copy_entry(store, container, archive, info, unpack_to, allowed, kind, rejected)
        if facts is None:
            continue
        total += facts["bytes"]
        files.append({"name": name, "compressed_bytes": info.compress_size, **facts})
    return files


def _copy_entry(
    store: BlobStore,
    container: str,
    archive: zipfile.ZipFile,
    info: zipfile.ZipInfo,
    unpack_to: str | None,
    allowed: int,
    kind: str | None,
    rejected: list[dict[str, Any]],
) -> dict[str, Any] | None:
    """Stream one entry (into its blob when unpacking); its facts, or None after recording a rejection."""
    name = info.filename
    stats = ContentStats(kind)
    writer = None
    if unpack_to is not None:
        content_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
        writer = BlockBlobWriter(store.blob(container, unpack_to + name), content_type=content_type)
    try:
        with archive.open(info) as member:
            while chunk := member.read(READ_CHUNK):
                stats.feed(chunk)
                if stats.size > allowed:
                    raise _TooLarge
                if writer is not None:
                    writer.write(chunk)
        if writer is not None:
            writer.commit(if_absent=False, metadata={"sha256": stats.sha256})
    except _TooLarge:
        _reject(rejected, name, RejectReason.ZIP_BOMB, f"expands past {allowed} bytes")
        return None
    except NotImplementedError as exc:
        _reject(rejected, name, RejectReason.UNSUPPORTED_COMPRESSION, str(exc))
        return None
    except (zipfile.BadZipFile, zlib.error, EOFError, RuntimeError) as exc:
        _reject(rejected, name, RejectReason.UNREADABLE_FILE, f"corrupt entry: {exc}")
        return None
    finally:
        if writer is not None:
            writer.abort()  # no-op after a commit
    facts = stats.result()
    if unpack_to is not None:
        facts["blob"] = f"{container}/{unpack_to}{name}"
    return facts


class _TooLarge(Exception):
    pass
