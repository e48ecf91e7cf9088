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


# --- parallel deflate and the streamed zip container ---------------------------------------------------


def test_parallel_deflate_is_one_valid_stream_in_order_with_crc() -> None:
    import random
    import zlib
    from concurrent.futures import ThreadPoolExecutor

    from shared.packages.parallel_deflate import ParallelDeflater

    rng = random.Random(7)
    data = b"".join(f"row {rng.randrange(10**6)},{'x' * rng.randrange(40)}\n".encode() for _ in range(40_000))
    for pool_size, level in ((0, 1), (2, 1), (3, 6), (2, 0)):
        out: list[bytes] = []
        pool = ThreadPoolExecutor(pool_size) if pool_size else None
        deflater = ParallelDeflater(out.append, level, pool, chunk_size=64 * 1024, depth=pool_size + 1)
        for start in range(0, len(data), 10_000):  # writes smaller than a piece get joined
            deflater.write(data[start : start + 10_000])
        deflater.finish()
        if pool:
            pool.shutdown()
        compressed = b"".join(out)
        assert len(out) > 10  # really cut into pieces
        assert zlib.decompress(compressed, -15) == data
        assert deflater.crc == zlib.crc32(data)
        assert (deflater.size, deflater.compressed_size) == (len(data), len(compressed))
        if level:  # the previous piece primes the next: about the ratio of one stream
            assert len(compressed) < len(zlib.compress(data, level)) * 1.05


def test_parallel_deflate_of_nothing_is_an_empty_stream() -> None:
    import zlib

    from shared.packages.parallel_deflate import ParallelDeflater

    out: list[bytes] = []
    deflater = ParallelDeflater(out.append, 1, None)
    deflater.finish()
    assert zlib.decompress(b"".join(out), -15) == b""
    assert (deflater.crc, deflater.size) == (0, 0)


def test_a_package_spanning_many_deflate_pieces_reads_back_identically() -> None:
    source = io.BufferedReader(GeneratedCsv(blocks=12), buffer_size=1 << 20)  # ~6.5 MB → ~13 MB UTF-16
    archive, result = build(EntityFile("Customers", "customers.csv", source))
    data = archive.read("customers.csv")
    assert data.startswith(b"\xff\xfeA\x00C\x00C\x00")
    assert len(data) == result.entities[0].output_bytes  # type: ignore[attr-defined]
    assert data.decode("utf-16").count("\r\n") == 12 * 10_000 + 1
    assert archive.testzip() is None


def test_zip64_entries_and_directory_read_back_with_zipfile() -> None:
    import struct
    import zlib

    from shared.packages.zip_stream import ZipStreamWriter

    out = io.BytesIO()
    writer = ZipStreamWriter(out.write)
    payload = "Données\n".encode() * 1000
    compressed = zlib.compress(payload, 1)[2:-4]  # raw deflate
    for name, zip64 in (("big.csv", True), ("Kunden-Ü.csv", False)):
        writer.start(name, (2024, 5, 6, 7, 8, 10), zip64=zip64)
        writer.write(compressed)
        writer.end(zlib.crc32(payload), len(compressed), len(payload))
    writer.close()
    raw = out.getvalue()
    assert writer.offset == len(raw)
    archive = zipfile.ZipFile(io.BytesIO(raw))
    big, unicode_name = archive.infolist()
    assert (big.filename, unicode_name.filename) == ("big.csv", "Kunden-Ü.csv")
    assert unicode_name.flag_bits & 0x800
    assert all(i.flag_bits & 0x08 for i in (big, unicode_name))
    assert big.extract_version == 45
    assert unicode_name.extract_version == 20
    assert big.date_time == (2024, 5, 6, 7, 8, 10)
    assert big.compress_type == zipfile.ZIP_DEFLATED
    # the Zip64 entry's local header: sizes 0xFFFFFFFF and a Zip64 extra; its descriptor has 8-byte sizes
    assert struct.unpack("<LL", raw[18:26]) == (0xFFFFFFFF, 0xFFFFFFFF)
    assert raw[30 + 7 : 30 + 7 + 4] == struct.pack("<HH", 1, 16)
    end_of_data = 30 + 7 + 20 + len(compressed)
    assert raw[end_of_data : end_of_data + 24] == struct.pack(
        "<4sLQQ", b"PK\x07\x08", zlib.crc32(payload), len(compressed), len(payload)
    )
    assert archive.read("big.csv") == payload == archive.read("Kunden-Ü.csv")
    assert archive.testzip() is None


def test_an_entry_not_declared_zip64_cannot_pass_4_gib() -> None:
    from shared.packages.zip_stream import ZipStreamWriter

    writer = ZipStreamWriter(io.BytesIO().write)
    writer.start("a.csv", (2024, 1, 1, 0, 0, 0), zip64=False)
    with pytest.raises(RuntimeError, match="Zip64"):
        writer.end(0, 10, 1 << 32)


def test_a_rejected_file_stops_the_deflate_threads_and_raises() -> None:
    bad = b"CODE,NAME\n" + b"A,ok\n" * 400_000 + b"B,\xff\n"  # the bad byte after several pieces
    with pytest.raises(PackageRejected) as caught:
        build(entity(bad))
    assert caught.value.reason_code is RejectReason.WRONG_ENCODING


def test_offsets_past_2_gib_get_zip64_directory_fields_and_end_records() -> None:
    import zlib

    from shared.packages.zip_stream import ZipStreamWriter

    out = io.BytesIO()
    writer = ZipStreamWriter(out.write)
    writer.offset = 3 << 30  # as if 3 GiB of entries came first (zipfile reads it as a shifted archive)
    payload = b"CODE\r\nA\r\n"
    compressed = zlib.compress(payload)[2:-4]
    writer.start("late.csv", (2024, 1, 1, 0, 0, 0), zip64=False)
    writer.write(compressed)
    writer.end(zlib.crc32(payload), len(compressed), len(payload))
    writer.close()
    raw = out.getvalue()
    assert b"PK\x06\x06" in raw
    assert b"PK\x06\x07" in raw
    archive = zipfile.ZipFile(io.BytesIO(raw))
    (info,) = archive.infolist()
    assert info.extract_version == 45  # its offset lives in a Zip64 extra field
    assert archive.read("late.csv") == payload
