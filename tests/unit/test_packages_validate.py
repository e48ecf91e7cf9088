"""Package and data-file validation: every rejection, built from real (evil) zips."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest

from shared.packages.errors import PackageRejected, RejectReason
from shared.packages.manifest import (
    EntityMap,
    Manifest,
    PackageEntity,
    PackageHeader,
    render_header,
    render_manifest,
)
from shared.packages.validate import PackageLimits, check_entry_name, validate_data_file, validate_package

CSV_UNICODE = "\ufeffCODE,NAME\r\nA,Alpha\r\n".encode("utf-16-le")


def manifest_bytes(*entities: PackageEntity) -> bytes:
    entities = entities or (
        PackageEntity("Currencies", "Currencies.csv", "CSV-Unicode", (EntityMap("CODE", "CODE"),)),
    )
    return render_manifest(Manifest("Project", "Project", entities))


def package(
    files: dict[str, bytes] | None = None,
    *,
    manifest: bytes | None = None,
    header: bytes | None = None,
    compression: int = zipfile.ZIP_DEFLATED,
) -> io.BytesIO:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as archive:
        for name, data in (files if files is not None else {"Currencies.csv": CSV_UNICODE}).items():
            archive.writestr(name, data)
        if manifest != b"omit":
            archive.writestr("Manifest.xml", manifest or manifest_bytes())
        if header != b"omit":
            archive.writestr("PackageHeader.xml", header or render_header(PackageHeader("Project")))
    buffer.seek(0)
    return buffer


def rejected(source: io.BytesIO, limits: PackageLimits | None = None) -> PackageRejected:
    with pytest.raises(PackageRejected) as caught:
        validate_package(source, limits=limits)
    assert caught.value.message
    assert caught.value.reason_code.value in str(caught.value)
    return caught.value


def test_a_good_package_passes_and_reports_its_entries() -> None:
    result = validate_package(package())
    assert result.manifest.entities[0].entity_name == "Currencies"
    assert {e.name for e in result.entries} == {"Currencies.csv", "Manifest.xml", "PackageHeader.xml"}
    assert result.uncompressed_bytes == sum(e.size for e in result.entries)


def test_microsoft_sample_package_passes(samples_dir: Path) -> None:
    with (samples_dir / "packages" / "usmf_asset-major-types-01.zip").open("rb") as stream:
        stream.seek(5)
        result = validate_package(stream)
        assert stream.tell() == 5  # position restored
    assert result.manifest.entities[0].source_format == "EXCEL"


@pytest.mark.parametrize(
    "name",
    [
        "../evil.csv",
        "a/../../evil.csv",
        "/etc/evil.csv",
        "dir\\evil.csv",
        "C:evil.csv",
        "c:/evil.csv",
        "a/./b",
        "x\x01y",
    ],
)
def test_unsafe_entry_paths_are_rejected(name: str) -> None:
    error = rejected(package({name: CSV_UNICODE, "Currencies.csv": CSV_UNICODE}))
    assert error.reason_code is RejectReason.UNSAFE_PATH
    assert error.entry == name


def test_plain_relative_names_pass_the_name_check() -> None:
    for name in ("Currencies.csv", "Resources/transform.xslt", "Fixed asset major type.xlsx", "dir/"):
        check_entry_name(name)


def test_a_duplicate_entry_is_rejected() -> None:
    buffer = package()
    with zipfile.ZipFile(buffer, "a") as archive, pytest.warns(UserWarning, match="Duplicate"):
        archive.writestr("Currencies.csv", b"another")
    buffer.seek(0)
    assert rejected(buffer).reason_code is RejectReason.DUPLICATE_ENTRY
    # names differing only in case collide on Windows, where D365 unpacks packages
    other_case = package({"Currencies.csv": CSV_UNICODE, "CURRENCIES.csv": CSV_UNICODE})
    assert rejected(other_case).reason_code is RejectReason.DUPLICATE_ENTRY


def test_a_high_ratio_entry_is_a_zip_bomb() -> None:
    bomb = package({"Currencies.csv": b"\xff\xfe" + bytes(8 * 1024 * 1024)})
    error = rejected(bomb, PackageLimits(max_ratio=100, ratio_min_bytes=1024))
    assert error.reason_code is RejectReason.ZIP_BOMB
    assert "Currencies.csv" in error.message


def test_total_inflated_size_is_limited() -> None:
    big = package({"Currencies.csv": CSV_UNICODE * 1000})
    assert rejected(big, PackageLimits(max_uncompressed_bytes=10_000)).reason_code is RejectReason.ZIP_BOMB


def test_one_entry_over_the_size_limit_is_rejected() -> None:
    big = package({"Currencies.csv": CSV_UNICODE * 1000})
    assert rejected(big, PackageLimits(max_entry_bytes=1000)).reason_code is RejectReason.FILE_TOO_LARGE


def test_package_and_entry_count_limits() -> None:
    assert (
        rejected(package(), PackageLimits(max_package_bytes=100)).reason_code
        is RejectReason.PACKAGE_TOO_LARGE
    )
    crowded = package({f"f{i}.csv": b"x" for i in range(5)} | {"Currencies.csv": CSV_UNICODE})
    assert rejected(crowded, PackageLimits(max_entries=5)).reason_code is RejectReason.TOO_MANY_ENTRIES


def test_not_a_zip_and_empty_input() -> None:
    assert rejected(io.BytesIO(b"Hello, I am a CSV,\r\n")).reason_code is RejectReason.NOT_A_ZIP
    assert rejected(io.BytesIO(b"")).reason_code is RejectReason.EMPTY_FILE


def test_missing_manifest_or_header() -> None:
    assert rejected(package(manifest=b"omit")).reason_code is RejectReason.MANIFEST_MISSING
    assert rejected(package(header=b"omit")).reason_code is RejectReason.HEADER_MISSING


def test_invalid_or_unsafe_manifest() -> None:
    assert rejected(package(manifest=b"<Data")).reason_code is RejectReason.MANIFEST_INVALID
    evil = b'<!DOCTYPE x [<!ENTITY a "b">]><DataManagementPackageManifest/>'
    assert rejected(package(manifest=evil)).reason_code is RejectReason.MANIFEST_UNSAFE


def test_manifest_without_entities() -> None:
    empty = render_manifest(Manifest("Project"))
    assert rejected(package(manifest=empty)).reason_code is RejectReason.MANIFEST_EMPTY


def test_manifest_entry_whose_data_file_is_missing() -> None:
    error = rejected(package({"Other.csv": CSV_UNICODE}))
    assert error.reason_code is RejectReason.DATA_FILE_MISSING
    assert error.entry == "Currencies.csv"
    assert "Currencies" in error.message


def test_csv_unicode_that_is_not_utf16_is_rejected() -> None:
    utf8 = package({"Currencies.csv": b"CODE,NAME\r\nA,Alpha\r\n"})
    error = rejected(utf8)
    assert error.reason_code is RejectReason.WRONG_ENCODING
    assert "UTF-16 LE" in error.message
    odd = package({"Currencies.csv": CSV_UNICODE + b"A"})
    assert rejected(odd).reason_code is RejectReason.WRONG_ENCODING
    lone_surrogate = package({"Currencies.csv": CSV_UNICODE + "\ud800".encode("utf-16-le", "surrogatepass")})
    assert rejected(lone_surrogate).reason_code is RejectReason.WRONG_ENCODING


def test_excel_format_needs_a_workbook() -> None:
    entity = PackageEntity("Assets", "Assets.xlsx", "EXCEL")
    bad = package({"Assets.xlsx": b"MAJORTYPEID,DESCRIPTION\r\n"}, manifest=manifest_bytes(entity))
    assert rejected(bad).reason_code is RejectReason.WRONG_ENCODING


@pytest.mark.parametrize("content", [b"", b"\xff\xfe"])
def test_an_empty_data_file_is_rejected(content: bytes) -> None:
    error = rejected(package({"Currencies.csv": content}))
    assert error.reason_code is RejectReason.EMPTY_FILE
    assert error.entry == "Currencies.csv"


def test_an_encrypted_entry_is_rejected() -> None:
    raw = bytearray(package().getvalue())
    for signature, flag_offset in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        at = raw.find(signature)  # the first entry: Currencies.csv
        raw[at + flag_offset] |= 0x1
    assert rejected(io.BytesIO(bytes(raw))).reason_code is RejectReason.ENCRYPTED_ENTRY


def test_a_corrupted_entry_is_unreadable() -> None:
    raw = bytearray(package({"Currencies.csv": CSV_UNICODE * 50}, compression=zipfile.ZIP_STORED).getvalue())
    at = raw.find("Alpha".encode("utf-16-le"))
    raw[at] ^= 0xFF  # the CRC no longer matches
    error = rejected(io.BytesIO(bytes(raw)))
    assert error.reason_code is RejectReason.UNREADABLE_FILE
    assert error.entry == "Currencies.csv"


def test_unsupported_compression_is_rejected() -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_BZIP2) as archive:
        archive.writestr("Currencies.csv", CSV_UNICODE)
        archive.writestr("Manifest.xml", manifest_bytes())
        archive.writestr("PackageHeader.xml", render_header(PackageHeader("P")))
    buffer.seek(0)
    assert rejected(buffer).reason_code is RejectReason.UNSUPPORTED_COMPRESSION


# -- raw data files (sent as they are, e.g. to a recurring File job)


def test_data_file_checks() -> None:
    info = validate_data_file("in/Currencies.csv", io.BytesIO(CSV_UNICODE), "CSV-Unicode")
    assert (info.name, info.size, info.encoding) == ("Currencies.csv", len(CSV_UNICODE), "utf-16-le")
    assert validate_data_file("c.csv", io.BytesIO(b"\xef\xbb\xbfA\r\n"), "CSV").encoding == "utf-8-sig"

    def reason(data: bytes, fmt: str = "CSV-Unicode", **kw) -> RejectReason:
        with pytest.raises(PackageRejected) as caught:
            validate_data_file("Currencies.csv", io.BytesIO(data), fmt, **kw)
        return caught.value.reason_code

    assert reason(b"") is RejectReason.EMPTY_FILE
    assert reason(b"\xff\xfe") is RejectReason.EMPTY_FILE
    assert reason(b"CODE,NAME\r\n") is RejectReason.WRONG_ENCODING
    assert reason(b"\xfe\xff\x00C") is RejectReason.WRONG_ENCODING  # big-endian is not what DMF reads
    assert reason(CSV_UNICODE * 10, limits=PackageLimits(max_entry_bytes=100)) is RejectReason.FILE_TOO_LARGE
    with pytest.raises(PackageRejected) as caught:
        validate_data_file("dir/", io.BytesIO(b"x"), "CSV")
    assert caught.value.reason_code is RejectReason.INVALID_FILE_NAME


def test_data_file_read_one_byte_at_a_time_still_checks_the_bom() -> None:
    class Trickle(io.BytesIO):
        def read(self, size: int | None = -1) -> bytes:
            return super().read(1)

    assert validate_data_file("c.csv", Trickle(CSV_UNICODE), "CSV-Unicode").size == len(CSV_UNICODE)


def test_limits_from_settings() -> None:
    from shared.settings_reader import SettingsReader

    reader = SettingsReader({"PACKAGE_MAX_BYTES": "1000", "PACKAGE_MAX_RATIO": "50"})
    limits = PackageLimits.from_reader(reader)
    assert (limits.max_package_bytes, limits.max_ratio, limits.max_entries) == (1000, 50.0, 1000)
    bad = SettingsReader({"PACKAGE_MAX_ENTRIES": "lots"})
    PackageLimits.from_reader(bad)
    assert bad.problems
