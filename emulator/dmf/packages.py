"""Read data packages (ref §7): a zip with ``Manifest.xml``, ``PackageHeader.xml`` and the data files.

Microsoft writes both XML files as UTF-16 LE with a BOM and no declaration (DataContractSerializer, ref §7.1);
third-party generators write UTF-8. Both are read. XML is parsed with xml.etree after refusing any DTD, so
entity expansion ("billion laughs") and external entities cannot happen (defusedxml's main guard).
"""

from __future__ import annotations

import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from xml.etree import ElementTree as ET

from emulator.dmf.model import DmfError

NS = "http://schemas.microsoft.com/dynamics/2015/01/DataManagement"
I_NS = "http://www.w3.org/2001/XMLSchema-instance"
MANIFEST = "Manifest.xml"
HEADER = "PackageHeader.xml"
MAX_MEMBER_BYTES = 512 * 1024 * 1024  # a single data file larger than this is refused (zip bombs)

_DECLARATION = re.compile(r"^\s*<\?xml[^>]*\?>", re.IGNORECASE)
_DTD = re.compile(r"<!(DOCTYPE|ENTITY)", re.IGNORECASE)


class PackageError(DmfError):
    """The package cannot be imported; the message is what D365-like callers see."""


def decode_text(data: bytes) -> str:
    """Text by its BOM (UTF-16 LE/BE, UTF-8), else UTF-16 LE without BOM when it looks like it, else UTF-8."""
    if data.startswith(b"\xff\xfe"):
        return data[2:].decode("utf-16-le")
    if data.startswith(b"\xfe\xff"):
        return data[2:].decode("utf-16-be")
    if data.startswith(b"\xef\xbb\xbf"):
        return data[3:].decode("utf-8")
    if len(data) >= 2 and data[1] == 0 and data[0] != 0:
        return data.decode("utf-16-le")
    return data.decode("utf-8")


def parse_xml(data: bytes, what: str) -> ET.Element:
    """Parse XML safely (no DTD), whatever its encoding; PackageError names ``what`` on failure."""
    try:
        text = decode_text(data)
    except UnicodeDecodeError as exc:
        raise PackageError(f"{what} could not be read: {exc}.") from None
    text = _DECLARATION.sub("", text, count=1)
    if _DTD.search(text):
        raise PackageError(f"{what} contains a DTD, which is not allowed.")
    try:
        return ET.fromstring(text)  # noqa: S314 (no DTD left, so no entity expansion; see above)
    except ET.ParseError as exc:
        raise PackageError(f"{what} is not valid XML: {exc}.") from None


def local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def child(element: ET.Element, name: str) -> ET.Element | None:
    """A child by local name, whatever its namespace (third-party packages omit it)."""
    for item in element:
        if local(item.tag) == name:
            return item
    return None


def text_of(element: ET.Element, name: str, default: str = "") -> str:
    found = child(element, name)
    if found is None or found.text is None:
        return default
    return found.text.strip()


def _int(element: ET.Element, name: str, default: int) -> int:
    try:
        return int(text_of(element, name, str(default)))
    except ValueError:
        return default


@dataclass(frozen=True)
class FieldMap:
    xml_field: str  # column in the data file
    entity_field: str  # staging field (upper case)


@dataclass
class ManifestEntity:
    entity_name: str
    source_format: str
    input_file_path: str
    excel_sheet_name: str = ""
    execution_unit: int = 1
    level: int = 1
    sequence: int = 1
    field_map: list[FieldMap] = field(default_factory=list)

    @property
    def order(self) -> tuple[int, int, int]:
        return (self.execution_unit, self.level, self.sequence)


@dataclass
class Manifest:
    definition_group: str
    description: str
    entities: list[ManifestEntity]


@dataclass
class PackageHeader:
    description: str = ""
    manifest_type: str = ""
    package_type: str = ""
    package_version: str = ""


def parse_manifest(data: bytes) -> Manifest:
    root = parse_xml(data, MANIFEST)
    if local(root.tag) != "DataManagementPackageManifest":
        raise PackageError(f"{MANIFEST} is not a data package manifest (root element {local(root.tag)}).")
    entity_list = child(root, "PackageEntityList")
    entities: list[ManifestEntity] = []
    for item in entity_list if entity_list is not None else []:
        if local(item.tag) != "DataManagementPackageEntityData":
            continue
        maps = child(item, "EntityMapList")
        field_map = [
            FieldMap(text_of(m, "XMLField"), text_of(m, "EntityField"))
            for m in (maps if maps is not None else [])
            if local(m.tag) == "EntityMap" and text_of(m, "EntityField")
        ]
        name = text_of(item, "EntityName")
        if not name:
            raise PackageError(f"{MANIFEST}: an entity of the package has no EntityName.")
        entities.append(
            ManifestEntity(
                entity_name=name,
                source_format=text_of(item, "SourceFormat"),
                input_file_path=text_of(item, "InputFilePath"),
                excel_sheet_name=text_of(item, "ExcelSheetName"),
                execution_unit=_int(item, "ExecutionUnit", 1),
                level=_int(item, "LevelInExecutionUnit", 1),
                sequence=_int(item, "SequenceInLevel", 1),
                field_map=field_map,
            )
        )
    return Manifest(text_of(root, "DefinitionGroupName"), text_of(root, "Description"), entities)


def parse_header(data: bytes) -> PackageHeader:
    root = parse_xml(data, HEADER)
    return PackageHeader(
        description=text_of(root, "Description"),
        manifest_type=text_of(root, "ManifestType"),
        package_type=text_of(root, "PackageType"),
        package_version=text_of(root, "PackageVersion"),
    )


class Package:
    """An opened package zip on disk. Members are found case-insensitively, with or without folders."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self._zip = zipfile.ZipFile(path)
        except (zipfile.BadZipFile, OSError):
            raise PackageError(
                "The package is not a valid zip file: a data package is a compressed file that holds "
                f"{MANIFEST}, {HEADER} and the data files."
            ) from None
        self._names = {info.filename.replace("\\", "/").lower(): info for info in self._zip.infolist()}
        manifest = self._member(MANIFEST)
        if manifest is None:
            self.close()
            raise PackageError(f"The package does not contain {MANIFEST}.")
        self.manifest = parse_manifest(self._read(manifest))
        header = self._member(HEADER)
        self.header = parse_header(self._read(header)) if header is not None else PackageHeader()

    def _member(self, name: str) -> zipfile.ZipInfo | None:
        wanted = name.replace("\\", "/").lower().lstrip("/")
        if wanted in self._names:
            return self._names[wanted]
        for key, info in self._names.items():
            if key.rsplit("/", 1)[-1] == wanted:
                return info
        return None

    def _read(self, info: zipfile.ZipInfo) -> bytes:
        if info.file_size > MAX_MEMBER_BYTES:
            raise PackageError(f"The file {info.filename} in the package is too large for the emulator.")
        try:
            return self._zip.read(info)
        except (zipfile.BadZipFile, OSError, RuntimeError) as exc:
            raise PackageError(f"The file {info.filename} in the package cannot be read: {exc}.") from None

    def data_file(self, entity: ManifestEntity) -> bytes:
        info = self._member(entity.input_file_path) if entity.input_file_path else None
        if info is None:
            raise PackageError(
                f"The data file '{entity.input_file_path}' of entity {entity.entity_name} is not in the "
                "package."
            )
        return self._read(info)

    def close(self) -> None:
        self._zip.close()

    def __enter__(self) -> Package:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()
