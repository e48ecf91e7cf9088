"""Streaming package build: encodings, mappings, several entities, rejections, bounded memory."""

from __future__ import annotations

import io
import tracemalloc
import zipfile
from typing import Any

import pytest

from shared.packages.build import EntityFile, build_package, entry_name_for
from shared.packages.errors import PackageRejected, RejectReason
from shared.packages.manifest import parse_header, parse_manifest
from shared.packages.validate import validate_package

CSV = 'CODE,NAME\nA,Alpha\nB,"Beta, the second"\n'
EXPECTED_UTF16 = b"\xff\xfe" + CSV.replace("\n", "\r\n").encode("utf-16-le")


class WriteOnly:
    """A sink that can only be written to (like a block-upload stream)."""

    def __init__(self) -> None:
        self.buffer = io.BytesIO()

    def write(self, data: bytes) -> int:
        return self.buffer.write(data)

    def flush(self) -> None:
        pass


def build(*files: EntityFile, **options) -> tuple[zipfile.ZipFile, object]:
    sink = WriteOnly()
    result = build_package(sink, files, definition_group="Import project", **options)
    assert result.zip_bytes == len(sink.buffer.getvalue())
    return zipfile.ZipFile(io.BytesIO(sink.buffer.getvalue())), result


def entity(data: bytes, name: str = "Currencies.csv", **kw) -> EntityFile:
    return EntityFile(kw.pop("entity_name", "Currencies"), name, io.BytesIO(data), **kw)


@pytest.mark.parametrize(
    "data",
    [
        CSV.encode("utf-8"),
        b"\xef\xbb\xbf" + CSV.encode("utf-8"),
        CSV.replace("\n", "\r\n").encode("utf-8"),
        b"\xff\xfe" + CSV.encode("utf-16-le"),
        b"\xfe\xff" + CSV.encode("utf-16-be"),
    ],
)
def test_csv_unicode_output_is_utf16le_bom_crlf_whatever_the_input(data: bytes) -> None:
    archive, _ = build(entity(data))
    assert archive.read("Currencies.csv") == EXPECTED_UTF16


def test_crlf_split_across_chunks_is_not_doubled_and_lf_gets_its_cr() -> None:
    text = "CODE,NAME\r\nA,x\nB,y\r\nC,z\r\n"
    for chunk_size in (1, 2, 3, 5, 11):
        archive, _ = build(entity(text.encode()), chunk_size=chunk_size)
        assert archive.read("Currencies.csv") == b"\xff\xfe" + text.replace("\r\n", "\n").replace(
            "\n", "\r\n"
        ).encode("utf-16-le")


def test_configured_encoding_for_files_without_bom() -> None:
    archive, _ = build(entity("CODE,NAME\nE,Café\n".encode("cp1252"), encoding="cp1252"))
    assert archive.read("Currencies.csv").decode("utf-16") == "CODE,NAME\r\nE,Café\r\n"


def test_mapping_from_the_header_row_uppercases_staging_fields() -> None:
    archive, result = build(entity(b"CurrencyCode;Name\nUSD;Dollar\n", delimiter=";"))
    manifest = parse_manifest(archive.read("Manifest.xml"))
    maps = manifest.entities[0].entity_maps
    assert [(m.xml_field, m.entity_field) for m in maps] == [
        ("CurrencyCode", "CURRENCYCODE"),
        ("Name", "NAME"),
    ]
    assert result.entities[0].columns == ("CurrencyCode", "Name")  # type: ignore[attr-defined]


def test_configured_mapping_is_authoritative_and_checked_against_the_header() -> None:
    archive, _ = build(entity(CSV.encode(), field_map={"name": "CURRENCYNAME", "Code": "CURRENCYCODE"}))
    maps = parse_manifest(archive.read("Manifest.xml")).entities[0].entity_maps
    assert [(m.xml_field, m.entity_field) for m in maps] == [
        ("NAME", "CURRENCYNAME"),
        ("CODE", "CURRENCYCODE"),
    ]
    with pytest.raises(PackageRejected) as caught:
        build(entity(CSV.encode(), field_map={"SYMBOL": "SYMBOL"}))
    assert caught.value.reason_code is RejectReason.MAPPING_INVALID
    assert "SYMBOL" in caught.value.message


def test_several_entities_in_one_package_keep_names_order_and_sequence() -> None:
    archive, _ = build(
        entity(CSV.encode(), "exports/2024/Currencies.csv"),
        entity(b"GROUP,DESC\nG1,One\n", "Customer groups.csv", entity_name="Customer groups"),
        entity(
            b"PK\x03\x04fake xlsx",
            "Assets.xlsx",
            entity_name="Fixed asset major type",
            source_format="EXCEL",
            field_map={"MAJORTYPEID": "MAJORTYPEID"},
            sequence_in_level=7,
        ),
        description="Nightly",
    )
    assert [i.filename for i in archive.infolist()] == [
        "Currencies.csv",
        "Customer groups.csv",
        "Assets.xlsx",
        "Manifest.xml",
        "PackageHeader.xml",
    ]
    manifest = parse_manifest(archive.read("Manifest.xml"))
    assert manifest.definition_group_name == "Import project"
    assert [(e.entity_name, e.input_file_path, e.sequence_in_level) for e in manifest.entities] == [
        ("Currencies", "Currencies.csv", 1),
        ("Customer groups", "Customer groups.csv", 2),
        ("Fixed asset major type", "Assets.xlsx", 7),
    ]
    assert archive.read("Assets.xlsx") == b"PK\x03\x04fake xlsx"  # other formats: byte for byte
    assert parse_header(archive.read("PackageHeader.xml")).description == "Nightly"
    for info in archive.infolist():
        assert info.flag_bits & 0x08  # streamed: data descriptors, no seeking back
    assert archive.testzip() is None


def test_the_built_package_passes_validation() -> None:
    sink = io.BytesIO()
    build_package(sink, [entity(CSV.encode())], definition_group="P")
    sink.seek(0)
    assert validate_package(sink).manifest.entities[0].input_file_path == "Currencies.csv"


def test_non_unicode_csv_is_copied_as_is_with_its_bom() -> None:
    data = b"\xef\xbb\xbf" + CSV.encode()
    archive, _ = build(entity(data, source_format="CSV"))
    assert archive.read("Currencies.csv") == data


@pytest.mark.parametrize(
    ("data", "options", "reason"),
    [
        (b"", {}, RejectReason.EMPTY_FILE),
        (b"\xef\xbb\xbf", {}, RejectReason.EMPTY_FILE),
        (b"CODE,NAME\n", {}, RejectReason.EMPTY_FILE),
        (b"CODE,NAME\r\n  \r\n", {}, RejectReason.EMPTY_FILE),
        (b"CODE,\nA,B\n", {}, RejectReason.HEADER_ROW_INVALID),
        (b"CODE,CODE\nA,B\n", {}, RejectReason.HEADER_ROW_INVALID),
        (b"CODE,NAME\nA,\xff\xfe\xfd\n", {}, RejectReason.WRONG_ENCODING),
        (b"PK\x03\x04", {"source_format": "EXCEL"}, RejectReason.MAPPING_INVALID),
        (CSV.encode(), {"field_map": {}}, RejectReason.MAPPING_INVALID),
    ],
)
def test_bad_input_is_rejected_with_a_reason(
    data: bytes, options: dict[str, Any], reason: RejectReason
) -> None:
    with pytest.raises(PackageRejected) as caught:
        build(entity(data, **options))
    assert caught.value.reason_code is reason
    assert caught.value.entry == "Currencies.csv"


@pytest.mark.parametrize(
    ("names", "reason"),
    [
        (["a.csv", "A.CSV"], RejectReason.DUPLICATE_FILE_NAME),
        (["Manifest.xml"], RejectReason.INVALID_FILE_NAME),
        (["dir/"], RejectReason.INVALID_FILE_NAME),
        (["..\\..\\"], RejectReason.INVALID_FILE_NAME),
    ],
)
def test_file_names_must_be_usable_entry_names(names: list[str], reason: RejectReason) -> None:
    with pytest.raises(PackageRejected) as caught:
        build(*(entity(CSV.encode(), name) for name in names))
    assert caught.value.reason_code is reason


def test_entry_name_keeps_the_original_base_name() -> None:
    assert entry_name_for("inbound/2024-01/Customer groups (v2).csv") == "Customer groups (v2).csv"
    assert entry_name_for("C:\\drop\\Kunden.csv") == "Kunden.csv"


class GeneratedCsv(io.RawIOBase):
    """A large CSV produced on demand from one repeated block (never held in memory as a whole)."""

    def __init__(self, blocks: int) -> None:
        rows = "".join(f"C{n:09d},Customer number {n},Zürich,{n * 3.25:.2f}\n" for n in range(10_000))
        self.block = rows.encode()
        self.pending = memoryview(b"ACCOUNT,NAME,CITY,AMOUNT\n")
        self.blocks = blocks

    def readable(self) -> bool:
        return True

    def readinto(self, target) -> int:
        if not self.pending and self.blocks:
            self.pending, self.blocks = memoryview(self.block), self.blocks - 1
        count = min(len(target), len(self.pending))
        target[:count] = self.pending[:count]
        self.pending = self.pending[count:]
        return count


class CountingSink:
    def __init__(self) -> None:
        self.count = 0

    def write(self, data: bytes) -> int:
        self.count += len(data)
        return len(data)

    def flush(self) -> None:
        pass


def test_a_large_csv_streams_with_bounded_memory() -> None:
    source = io.BufferedReader(GeneratedCsv(blocks=60), buffer_size=1 << 20)  # ~32 MB, ~64 MB as UTF-16
    sink = CountingSink()
    tracemalloc.start()
    try:
        result = build_package(
            sink,
            [EntityFile("Customers", "customers.csv", source)],
            definition_group="Customers",
            compresslevel=1,
        )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    built = result.entities[0]
    assert built.input_bytes > 29_000_000
    # UTF-16 doubles; +2 BOM, +2 for the header's CR; each row gains a CR (+2) and its "ü" loses 2
    # (two bytes in UTF-8, one UTF-16 unit)
    assert built.output_bytes == 2 * built.input_bytes + 4
    assert sink.count == result.zip_bytes
    assert peak < 24 * 1024 * 1024, f"peak traced memory {peak / 1e6:.1f} MB"
